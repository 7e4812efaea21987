/** The service's Prometheus metrics, in a Registry of its own (two servers in one process never mix theirs). */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface ServeMetrics {
  registry: Registry;
  requests: Counter<'route' | 'method' | 'status'>;
  images: Counter<'setup' | 'outcome'>;
  batchSize: Histogram<'setup'>;
  queueDepth: Gauge<'setup'>;
  latency: Histogram<'route'>;
}

export function createServeMetrics(): ServeMetrics {
  const registry = new Registry();
  return {
    registry,
    requests: new Counter({
      name: 'promptiqa_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    }),
    images: new Counter({
      name: 'promptiqa_images_total',
      help: 'images scored (outcome ok) or failed (outcome error), by set-up',
      labelNames: ['setup', 'outcome'],
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'promptiqa_batch_size',
      help: 'images per scoring batch, by set-up',
      labelNames: ['setup'],
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'promptiqa_queue_depth',
      help: 'images waiting for a batch, by set-up',
      labelNames: ['setup'],
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'promptiqa_request_duration_seconds',
      help: 'time from a request to its answer, by route',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}
