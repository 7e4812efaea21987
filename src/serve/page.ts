/**
 * The page served at `/` and the read-only endpoints it uses under `--root` (scored outputs, images, runs).
 * A stub until the page lands: the server calls it, and it registers nothing yet.
 */
import type { FastifyInstance } from 'fastify';

export interface PageOptions {
  /** the folder whose files (images, score outputs, eval and train runs) the page may open; none: nothing can be opened */
  root?: string;
}

export async function registerPage(app: FastifyInstance, opts: PageOptions): Promise<void> {
  await Promise.resolve([app, opts]);
}
