import { readFileSync } from 'node:fs';

let version: string | undefined;

/** promptiqa's version, from its package.json (src/util and dist/util are both two levels down). */
export function packageVersion(): string {
  if (version === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
      version = pkg.version ?? '0.0.0';
    } catch {
      version = '0.0.0';
    }
  }
  return version;
}
