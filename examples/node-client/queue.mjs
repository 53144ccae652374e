// The shared work queue from Node, one JSON line per step:
//
//   PI_COORDINATOR_ADDR=127.0.0.1:8765 node queue.mjs
//
// Two instances: "producer" puts five tasks on its queue; "helper", idle, steals the best of
// them (the task moves to it and runs there), completes it with the run's fencing token, then
// the producer works through the rest. A completion with a stale fence is refused
// (`task_lost`). Optional: QUEUE_PREFIX (default node-<pid>) names the two instances.

import { Coordinator, CoordinatorError } from "./client.mjs";

/** @param {string} step @param {Record<string, unknown>} [fields] */
function say(step, fields = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

const prefix = process.env.QUEUE_PREFIX || `node-${process.pid}`;
const options = { addr: process.env.PI_COORDINATOR_ADDR, token: process.env.PI_COORDINATOR_TOKEN };
const producer = new Coordinator(options);
const helper = new Coordinator(options);
await producer.register({ instanceId: `${prefix}-producer` });
await helper.register({ instanceId: `${prefix}-helper` });
try {
  for (let i = 0; i < 5; i++) {
    await producer.putTask({ n: i }, { toolName: "square", priority: i === 3 ? 5 : 0,
                                       taskId: `${prefix}-t${i}` });
  }
  say("put", { queued: (await producer.listTasks({ owner: producer.instanceId })).length });

  const stolen = await helper.stealTask({ leaseMs: 30_000 });
  const done = await helper.completeTask(stolen, { square: stolen.payload.n ** 2 });
  say("stolen", { taskId: stolen.taskId, owner: stolen.owner, fence: stolen.fence,
                  state: done.state, result: done.result });

  let stale = null;
  try {
    await helper.completeTask({ ...stolen, fence: stolen.fence - 1 }, "late");
  } catch (err) {
    if (!(err instanceof CoordinatorError)) throw err;
    stale = err.code;
  }
  say("stale", { code: stale });

  const order = [];
  for (let task = await producer.takeTask(); task; task = await producer.takeTask()) {
    await producer.completeTask(task, { square: task.payload.n ** 2 });
    order.push(task.taskId);
  }
  const stats = await producer.queueStats();
  say("worked", { order, stealing: stats.stealing });
} finally {
  await helper.close();
  await producer.close();
}
