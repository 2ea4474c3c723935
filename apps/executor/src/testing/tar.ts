import { TarParser, type TarEntry } from '@cryo/clip';

/** The entries of a whole tar archive in memory, in archive order. For unit tests. */
export function tarEntries(tar: Buffer): TarEntry[] {
  const out: TarEntry[] = [];
  const parser = new TarParser((e) => out.push(e));
  parser.push(tar);
  parser.end();
  return out;
}
