/**
 * The OpenAPI 3 description of the service, served at /openapi.json. Written by hand next to the routes
 * (`server.ts`); `test/serve.test.ts` checks that every route the server registers is described here.
 */
import { packageVersion } from '../util/version.js';

const error = { $ref: '#/components/schemas/Error' };
const json = (schema: object): object => ({ 'application/json': { schema } });
const answer = (description: string, schema: object = error): object => ({ description, content: json(schema) });

const setupFields = {
  setup: { type: 'string', description: 'the set-up that scored (a --method name)' },
  method: { type: 'string' },
  scoreRange: { type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 2 },
  higherIsBetter: { type: 'boolean' },
  model: {
    type: 'object',
    properties: {
      name: { type: 'string' },
      id: { type: 'string', description: "the weights' identity (sha256), as checkpoints record it" },
    },
    required: ['name', 'id'],
  },
};

export function openApiDocument(): object {
  return {
    openapi: '3.0.3',
    info: {
      title: 'promptiqa serve',
      version: packageVersion(),
      description:
        'Blind image quality scores over HTTP. With a token set, the API (/v1/…) and /metrics need `Authorization: Bearer <token>`.',
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: { type: 'object', properties: { error: { type: 'string' } }, required: ['error'] },
        Setup: { type: 'object', properties: { ...setupFields, default: { type: 'boolean' } }, required: Object.keys(setupFields) },
        Result: {
          type: 'object',
          description: 'one image, in the order given: `name` (raw and multipart) or `file` (JSON), and `score` or `error`',
          properties: { name: { type: 'string' }, file: { type: 'string' }, score: { type: 'number' }, error: { type: 'string' } },
        },
        Scores: {
          type: 'object',
          properties: { ...setupFields, results: { type: 'array', items: { $ref: '#/components/schemas/Result' } } },
          required: [...Object.keys(setupFields), 'results'],
        },
      },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/score': {
        post: {
          summary: 'score images: one as the raw body, several as multipart/form-data, or files under --root named in JSON',
          parameters: [
            {
              name: 'setup',
              in: 'query',
              required: false,
              schema: { type: 'string' },
              description: 'a loaded set-up (default: the first)',
            },
            { name: 'name', in: 'query', required: false, schema: { type: 'string' }, description: 'raw body: the name given back' },
          ],
          requestBody: {
            required: true,
            content: {
              'image/*': { schema: { type: 'string', format: 'binary' } },
              'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
              'multipart/form-data': {
                schema: {
                  type: 'object',
                  properties: { setup: { type: 'string' }, file: { type: 'array', items: { type: 'string', format: 'binary' } } },
                },
              },
              'application/json': {
                schema: {
                  type: 'object',
                  properties: {
                    files: { type: 'array', items: { type: 'string' }, description: 'paths relative to --root' },
                    setup: { type: 'string' },
                  },
                  required: ['files'],
                },
              },
            },
          },
          responses: {
            200: answer('the scores, one result per image (a failed image has `error`)', { $ref: '#/components/schemas/Scores' }),
            400: answer('a malformed request or an unknown set-up'),
            401: answer('a token is set and the request does not carry it'),
            403: answer('a named file resolves (after links) outside --root, or the server has no --root; nothing was read'),
            413: answer('the body, a file or the number of images is over the limit'),
            415: answer('a content type other than an image, octet-stream, multipart or JSON'),
            503: answer('the queue is full, the request timed out, or the server is closing: try again after Retry-After seconds'),
          },
        },
      },
      '/v1/setups': {
        get: {
          summary: 'the loaded set-ups',
          responses: {
            200: answer('the default set-up and every loaded one', {
              type: 'object',
              properties: { default: { type: 'string' }, setups: { type: 'array', items: { $ref: '#/components/schemas/Setup' } } },
            }),
            401: answer('a token is set and the request does not carry it'),
          },
        },
      },
      '/healthz': {
        get: { summary: 'the process answers', security: [], responses: { 200: answer('alive', { type: 'object' }) } },
      },
      '/readyz': {
        get: {
          summary: 'the models are loaded and the server is not closing',
          security: [],
          responses: { 200: answer('ready', { type: 'object' }), 503: answer('closing') },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics: requests by route and status, images scored, batch sizes, queue depth, latency',
          responses: { 200: { description: 'the text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      '/openapi.json': {
        get: { summary: 'this description', security: [], responses: { 200: answer('OpenAPI 3', { type: 'object' }) } },
      },
    },
  };
}
