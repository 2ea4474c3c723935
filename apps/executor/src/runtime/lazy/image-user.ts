/**
 * The image's `User` ("", "name", "uid", "name:group", "uid:gid", ...) resolved against the
 * image's own /etc/passwd and /etc/group, the way runc's libcontainer/user (and so Docker) does:
 * - a name must exist in passwd; a number need not (its gid is then 0 and its home "/");
 * - an explicit group (name or number) replaces the primary group and adds no supplementary
 *   groups; without one, every group that lists the user's name is a supplementary group.
 */
import { CryoError } from '@cryo/snapshot';

export interface ImageUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const NUMERIC = /^\d+$/;

export function parsePasswd(text: string): PasswdEntry[] {
  return text.split('\n').flatMap((line): PasswdEntry[] => {
    if (line.trim() === '' || line.startsWith('#')) return [];
    const [name, , uid, gid, , home] = line.split(':');
    if (name === undefined || uid === undefined || gid === undefined || !NUMERIC.test(uid) || !NUMERIC.test(gid)) return [];
    return [{ name, uid: Number(uid), gid: Number(gid), home: home ?? '' }];
  });
}

export function parseGroup(text: string): GroupEntry[] {
  return text.split('\n').flatMap((line): GroupEntry[] => {
    if (line.trim() === '' || line.startsWith('#')) return [];
    const [name, , gid, members] = line.split(':');
    if (name === undefined || gid === undefined || !NUMERIC.test(gid)) return [];
    return [{ name, gid: Number(gid), members: (members ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '') }];
  });
}

/**
 * Resolve `user` with the image's passwd and group files (null when the image has none).
 * Throws UNPROCESSABLE for a name the image does not know.
 */
export function resolveImageUser(user: string, passwdText: string | null, groupText: string | null): ImageUser {
  const passwd = passwdText === null ? [] : parsePasswd(passwdText);
  const groups = groupText === null ? [] : parseGroup(groupText);
  const colon = user.indexOf(':');
  const userPart = (colon < 0 ? user : user.slice(0, colon)) || '0';
  const groupPart = colon < 0 ? '' : user.slice(colon + 1);

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (NUMERIC.test(userPart)) {
    uid = Number(userPart);
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === userPart);
    if (entry === undefined) {
      throw new CryoError('UNPROCESSABLE', `image user "${userPart}" is not in the image's /etc/passwd${passwdText === null ? ' (the image has none)' : ''}`);
    }
    uid = entry.uid;
  }
  let gid = entry?.gid ?? 0;
  const home = entry !== undefined && entry.home !== '' ? entry.home : '/';

  if (groupPart !== '') {
    if (NUMERIC.test(groupPart)) {
      gid = Number(groupPart);
    } else {
      const group = groups.find((g) => g.name === groupPart);
      if (group === undefined) {
        throw new CryoError('UNPROCESSABLE', `image group "${groupPart}" is not in the image's /etc/group${groupText === null ? ' (the image has none)' : ''}`);
      }
      gid = group.gid;
    }
    return { uid, gid, additionalGids: [], home };
  }
  const name = entry?.name;
  const additionalGids = name === undefined ? [] : [...new Set(groups.filter((g) => g.members.includes(name)).map((g) => g.gid))];
  return { uid, gid, additionalGids, home };
}
