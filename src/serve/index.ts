/** The scoring service: `createServer` (a Fastify instance) and what it is made of. */
export { createServer, bindingProblem, isLoopback, SERVE_DEFAULTS } from './server.js';
export type { ServerOptions, SetupSpec, MetricSetup, ServeLimits, ServeState } from './server.js';
export { openApiDocument } from './openapi.js';
