// The least a JavaScript handler can do: each message's value back as its one
// output. Built by scripts/bench/guest-glue.sh to measure what componentize-js
// costs per message before any handler code runs.
export function init(settings) {}
export function handle(msg) {
  return [{ value: msg.value, key: undefined, headers: [], topic: undefined }];
}
export function handleBatch(msgs) {
  const results = new Array(msgs.length);
  for (let i = 0; i < msgs.length; i++) {
    results[i] = { tag: 'ok', val: [{ value: msgs[i].value, key: undefined, headers: [], topic: undefined }] };
  }
  return results;
}
