/**
 * What a snapshot captures of a container's mounts. The writable layer never holds what is
 * mounted over it, and `docker commit` leaves every mount out, so an image with a `VOLUME` would
 * lose exactly the data its users care about. cryo captures the volumes it made: the anonymous
 * volumes Docker creates for the image's `VOLUME` paths, local driver. Their content goes into
 * the snapshot's layer at the volume's path (opaque: it replaces what the image holds there),
 * and Docker fills the new sandbox's new empty volume from it on restore.
 *
 * Every other mount (a bind, a named volume, a tmpfs, another volume driver) was made by someone
 * else: it is not captured, and says so in the snapshot (`excluded_mounts`), never silently.
 */
import type Docker from 'dockerode';
import type { ExcludedMount } from '@cryo/snapshot';

export interface CapturedVolume {
  name: string;
  /** the path in the container, absolute */
  destination: string;
  /** the volume's content on this host (`.../volumes/<name>/_data`) */
  source: string;
}

export interface MountPlan {
  volumes: CapturedVolume[];
  excluded: ExcludedMount[];
}

const ANONYMOUS_VOLUME = /^[0-9a-f]{64}$/;

function clean(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/** A path in the container as a layer path: `/var/lib/db/` -> `var/lib/db`. */
export function layerPathOf(destination: string): string {
  return clean(destination).replace(/^\/+/, '');
}

/** The mounts of `container` (run from `image`): which are captured, which are excluded and why. */
export function planMounts(container: Docker.ContainerInspectInfo, imageVolumes: Record<string, unknown> | null | undefined): MountPlan {
  const declared = new Set(Object.keys(imageVolumes ?? {}).map(clean));
  const requested = new Set<string>([
    ...(container.HostConfig.Binds ?? []).map((b) => clean(b.split(':')[1] ?? '')),
    ...(container.HostConfig.Mounts ?? []).map((m) => clean(m.Target)),
  ]);
  const volumes: CapturedVolume[] = [];
  const excluded: ExcludedMount[] = [];
  for (const m of container.Mounts) {
    const destination = clean(m.Destination);
    const name = m.Name ?? null;
    if (m.Type === 'volume' && (m.Driver ?? 'local') === 'local' && name !== null && ANONYMOUS_VOLUME.test(name)
      && declared.has(destination) && !requested.has(destination)) {
      volumes.push({ name, destination, source: m.Source });
      continue;
    }
    excluded.push({ type: m.Type, destination, source: m.Type === 'bind' ? m.Source : null, name, reason: exclusionReason(m) });
  }
  for (const [destination] of Object.entries(container.HostConfig.Tmpfs ?? {})) {
    excluded.push({ type: 'tmpfs', destination: clean(destination), source: null, name: null, reason: 'a tmpfs holds memory, not files of the sandbox image' });
  }
  return { volumes, excluded };
}

function exclusionReason(m: Docker.ContainerInspectInfo['Mounts'][number]): string {
  switch (m.Type) {
    case 'bind':
      return 'a bind mount of a host path: it belongs to the host, not to the sandbox';
    case 'tmpfs':
      return 'a tmpfs holds memory, not files of the sandbox image';
    case 'volume':
      if ((m.Driver ?? 'local') !== 'local') return `a volume of driver ${m.Driver ?? '?'}: its content lives outside this host`;
      return 'a named volume: it outlives the sandbox and may be shared, so it is not copied into the snapshot';
    default:
      return `a ${m.Type} mount, which cryo did not create`;
  }
}
