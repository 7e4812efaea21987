/**
 * Messages that name a setting. The library names its option (`imageCol`, `allowOutsideRoot: true`), the
 * command line its flag (`--image-col`, `--allow-outside-root`). An error made from a `Wording` says it the
 * library's way in its `message`; the command line asks for it again with its own names (`messageFor`), so
 * neither audience reads the other's names.
 */

/** How a message names an option, with the value it suggests for a boolean one; undefined where there is no such setting. */
export type OptionName = (option: string, value?: boolean) => string | undefined;

/** A message that names options through `name`. */
export type Wording = (name: OptionName) => string;

/** The library's names: `imageCol`, `checkImages: false`. */
export const libraryName: OptionName = (option, value) => (value === undefined ? option : `${option}: ${value}`);

/** An error whose message names options: `message` with the library's names, `messageFor` with others. */
export interface NamesOptions {
  messageFor(name: OptionName): string;
}

export function namesOptions(err: unknown): err is Error & NamesOptions {
  return err instanceof Error && typeof (err as Partial<NamesOptions>).messageFor === 'function';
}
