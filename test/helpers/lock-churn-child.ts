// Takes and releases the lock on argv[2] (a file under folders the lock makes) argv[3] times, waiting while another
// process holds it: the churn in which one process's release removes the empty folders another is about to use.
import { withLockWaiting } from '../../src/util/lock.js';

const target = process.argv[2]!;
for (let i = 0; i < Number(process.argv[3]); i++) await withLockWaiting(target, 'file', () => Promise.resolve(), 1);
process.stdout.write('done\n');
