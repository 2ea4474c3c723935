/** One challenge of a `WWW-Authenticate` header: scheme in lower case, parameter names in lower case. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges such as
 * `Basic realm="Registry"` or `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"`.
 * Quoted values may hold commas and backslash escapes.
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const challenges: AuthChallenge[] = [];
  let pos = 0;
  const skip = (chars: RegExp): void => {
    while (pos < header.length && chars.test(header.charAt(pos))) pos++;
  };
  const readToken = (): string => {
    const start = pos;
    while (pos < header.length && TOKEN_CHAR.test(header.charAt(pos))) pos++;
    return header.slice(start, pos);
  };
  // Lenient: servers do send unquoted URLs, which are not RFC tokens.
  const readBare = (): string => {
    const start = pos;
    while (pos < header.length && !/[\s,]/.test(header.charAt(pos))) pos++;
    return header.slice(start, pos);
  };
  const readQuoted = (): string => {
    pos++; // opening quote
    let out = '';
    while (pos < header.length) {
      const ch = header.charAt(pos);
      if (ch === '\\' && pos + 1 < header.length) {
        out += header.charAt(pos + 1);
        pos += 2;
      } else if (ch === '"') {
        pos++;
        return out;
      } else {
        out += ch;
        pos++;
      }
    }
    return out; // unterminated: take what there is
  };

  while (pos < header.length) {
    skip(/[\s,]/);
    const scheme = readToken();
    if (scheme === '') {
      // Not a token: skip one character so garbage cannot loop forever.
      if (pos < header.length) pos++;
      continue;
    }
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (;;) {
      skip(/[\s,]/);
      const start = pos;
      const name = readToken();
      skip(/[ \t]/);
      if (name === '' || header.charAt(pos) !== '=') {
        pos = start; // a token without '=' begins the next challenge
        break;
      }
      pos++; // '='
      skip(/[ \t]/);
      const value = header.charAt(pos) === '"' ? readQuoted() : readBare();
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return challenges;
}
