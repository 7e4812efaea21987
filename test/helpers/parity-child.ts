// Runs every method on a provider in a child process and replies with its outputs: argv = provider [perturb].
import { type Provider } from '../../src/graph/runtime.js';
import { parityOutputs } from './parity.js';
import { reply } from './software-webgpu.js';

const [provider, perturb] = process.argv.slice(2) as [Provider, string | undefined];
reply(await parityOutputs(provider, perturb === undefined ? 1 : Number(perturb)));
