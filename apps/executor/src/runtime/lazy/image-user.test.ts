import { describe, expect, it } from 'vitest';
import { resolveImageUser } from './image-user';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  '# a comment',
  'app:x:1000:1000:App:/home/app:/bin/sh',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'broken:line',
  '',
].join('\n');
const GROUP = ['root:x:0:', 'adm:x:4:app,daemon', 'staff:x:50:app', 'app:x:1000:', 'docker:x:999:daemon'].join('\n');

describe('resolveImageUser', () => {
  it('defaults to root with root\'s home', () => {
    expect(resolveImageUser('', PASSWD, GROUP)).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/root' });
  });

  it('resolves a name to uid, primary gid, home and the groups that list it', () => {
    expect(resolveImageUser('app', PASSWD, GROUP)).toEqual({ uid: 1000, gid: 1000, additionalGids: [4, 50], home: '/home/app' });
  });

  it('resolves a uid found in passwd like its name', () => {
    expect(resolveImageUser('1000', PASSWD, GROUP)).toEqual({ uid: 1000, gid: 1000, additionalGids: [4, 50], home: '/home/app' });
  });

  it('takes an unknown uid as is, with gid 0 and home /', () => {
    expect(resolveImageUser('4242', PASSWD, GROUP)).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: '/' });
    expect(resolveImageUser('4242', null, null)).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: '/' });
  });

  it('an explicit group replaces the primary group and adds no supplementary ones', () => {
    expect(resolveImageUser('app:staff', PASSWD, GROUP)).toEqual({ uid: 1000, gid: 50, additionalGids: [], home: '/home/app' });
    expect(resolveImageUser('daemon:7', PASSWD, GROUP)).toEqual({ uid: 1, gid: 7, additionalGids: [], home: '/usr/sbin' });
    expect(resolveImageUser('123:456', null, null)).toEqual({ uid: 123, gid: 456, additionalGids: [], home: '/' });
    expect(resolveImageUser(':docker', PASSWD, GROUP)).toEqual({ uid: 0, gid: 999, additionalGids: [], home: '/root' });
  });

  it('refuses names the image does not know', () => {
    expect(() => resolveImageUser('ghost', PASSWD, GROUP)).toThrow(/image user "ghost" is not in the image's \/etc\/passwd/);
    expect(() => resolveImageUser('app:ghosts', PASSWD, GROUP)).toThrow(/image group "ghosts"/);
    expect(() => resolveImageUser('app', null, null)).toThrow(/the image has none/);
  });
});
