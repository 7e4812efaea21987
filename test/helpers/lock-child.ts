// Holds the lock on argv[2] until killed, for the stale-lock test; prints "locked" once it holds it.
import { acquireLock } from '../../src/util/lock.js';

acquireLock(process.argv[2]!, 'file');
process.stdout.write('locked\n');
setInterval(() => undefined, 1000);
