"""The tutorial's Python consumer, the way its program 2 is usually written:
one confluent-kafka consume -> compute -> produce loop, as a contender of the
end-to-end benchmark (host/benches/e2e.rs).

    python_loop.py BROKERS INPUT OUTPUT DEAD_LETTER GROUP

It gives the host's guarantee with the host's client settings: at least once
(acks=all, idempotent producer), an input offset is stored only after its
output, or its dead letter, is acknowledged (delivery callbacks, in input
order per partition), and stored offsets are auto-committed every second.
The output is the input object with "result" added; integers are exact
(checked 64-bit arithmetic, as the `calc` crate does), other numbers are
floats. Anything else goes to the dead-letter topic with the reason.

SIGINT or SIGTERM stops fetching, flushes the producer, stores the last
offsets, commits and exits 0. Set up with scripts/bench/setup-python.sh.
"""

import collections
import json
import re
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# What `calc` takes for a number: decimal digits, signs, a point, an exponent.
DECIMAL = re.compile(r"[0-9+\-.eE]+")
# Most messages taken from librdkafka at once; each is still handled on its own.
BATCH = 256


class InvalidInput(Exception):
    """The message cannot be computed; it becomes a dead letter."""


def operand(obj, field):
    if field not in obj:
        raise InvalidInput(f'missing operand "{field}"')
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f'operand "{field}" must be a number or a numeric string')
    if isinstance(value, str):
        text = value.strip()
        try:
            # Python's int() also takes "1_000"; `calc` does not.
            if "_" in text:
                raise ValueError(text)
            number = int(text)
        except ValueError:
            if not DECIMAL.fullmatch(text):
                raise InvalidInput(f'operand "{field}" is not a number: {json.dumps(value)}')
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise InvalidInput(f'operand "{field}" is out of range: {json.dumps(value)}')
        else:
            if not I64_MIN <= number <= I64_MAX:
                number = float(number)
        return number
    if isinstance(value, int) and not I64_MIN <= value <= I64_MAX:
        return float(value)
    return value


def compute(op, obj):
    if not isinstance(obj, dict):
        raise InvalidInput("expected a JSON object")
    if "operator_1" in obj or "operator_2" in obj:
        a, b = operand(obj, "operator_1"), operand(obj, "operator_2")
    elif "x" in obj or "y" in obj:
        a, b = operand(obj, "x"), operand(obj, "y")
    else:
        raise InvalidInput('missing operands: expected "operator_1" and "operator_2"')
    result = op(a, b) if isinstance(a, int) and isinstance(b, int) else op(float(a), float(b))
    if isinstance(result, int):
        if not I64_MIN <= result <= I64_MAX:
            raise InvalidInput(f"integer overflow: {a} {b}")
    elif result != result or result in (float("inf"), float("-inf")):
        raise InvalidInput(f"result is not a finite number: {a} {b}")
    obj["result"] = result
    return obj


def add(a, b):
    return a + b


def subtract(a, b):
    return a - b


OPERATIONS = {"sum": add, "add": add, "sub": subtract, "subtract": subtract}


def handle(value):
    """The output value, or raises (kind, reason) as a tuple in a ValueError."""
    try:
        obj = json.loads(value)
    except (ValueError, TypeError) as err:
        raise ValueError(("invalid-json", f"invalid JSON: {err}"))
    if not isinstance(obj, dict) or "operation" not in obj:
        raise ValueError(("missing-route", "no field `operation`"))
    op = OPERATIONS.get(obj["operation"]) if isinstance(obj["operation"], str) else None
    if op is None:
        raise ValueError(("unknown-route", f"no handler for operation {obj['operation']!r}"))
    try:
        return json.dumps(compute(op, obj), separators=(",", ":")).encode()
    except InvalidInput as err:
        raise ValueError(("invalid-input", str(err)))


class Offsets:
    """Per input partition, the offsets taken and not yet stored, in input
    order; an offset is stored once it and every earlier one are acknowledged."""

    def __init__(self, consumer, topic):
        self.consumer = consumer
        self.topic = topic
        self.pending = collections.defaultdict(collections.deque)
        self.acked = collections.defaultdict(set)
        self.ready = {}
        self.failed = None

    def taken(self, partition, offset):
        self.pending[partition].append(offset)

    def delivered(self, partition, offset):
        pending, acked = self.pending[partition], self.acked[partition]
        acked.add(offset)
        last = None
        while pending and pending[0] in acked:
            last = pending.popleft()
            acked.discard(last)
        if last is not None:
            self.ready[partition] = last

    def store(self):
        if not self.ready:
            return
        offsets = [TopicPartition(self.topic, p, o + 1) for p, o in self.ready.items()]
        self.ready = {}
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as err:
            # The partition was revoked: its new owner starts from the last commit.
            print(f"python_loop: offsets not stored: {err}", file=sys.stderr)


def main():
    if len(sys.argv) != 6:
        sys.exit("usage: python_loop.py BROKERS INPUT OUTPUT DEAD_LETTER GROUP")
    brokers, input_topic, output_topic, dead_letter_topic, group = sys.argv[1:]

    # The host's settings (host/src/kafka.rs).
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120000,
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "client.id": "python-loop",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
        }
    )
    offsets = Offsets(consumer, input_topic)
    running = True

    def stop(_signum, _frame):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def dead_letter(message, kind, reason, on_delivery):
        headers = list(message.headers() or []) + [
            ("stagehost-error-kind", kind),
            ("stagehost-error-reason", reason),
            ("stagehost-source-topic", input_topic),
            ("stagehost-source-partition", str(message.partition())),
            ("stagehost-source-offset", str(message.offset())),
            ("stagehost-stage", "python"),
        ]
        print(f"python_loop: dead letter ({kind}): {reason}", file=sys.stderr)
        produce(dead_letter_topic, message.key(), message.value(), headers, on_delivery)

    def produce(topic, key, value, headers, on_delivery):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.01)

    def on_delivery_for(message, is_dead_letter):
        partition, offset = message.partition(), message.offset()

        def on_delivery(err, _record):
            if err is None:
                offsets.delivered(partition, offset)
            elif is_dead_letter:
                # A dead letter must not be lost: leave the offset unstored.
                offsets.failed = f"dead letter not delivered: {err}"
            else:
                dead_letter(message, "produce-failed", f"producing an output failed: {err}",
                            on_delivery_for(message, True))

        return on_delivery

    consumer.subscribe([input_topic])
    print(f"python_loop: {input_topic} -> {output_topic} (dead letters: {dead_letter_topic}), group {group}",
          file=sys.stderr)
    while running and offsets.failed is None:
        # Wait for one message, then take whatever else is ready (consume()
        # alone would wait for a full batch).
        first = consumer.poll(0.1)
        batch = [first] + consumer.consume(BATCH - 1, 0) if first is not None else []
        for message in batch:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"python_loop: consumer error ({message.error()}); continuing", file=sys.stderr)
                continue
            offsets.taken(message.partition(), message.offset())
            try:
                output = handle(message.value())
            except ValueError as err:
                kind, reason = err.args[0]
                dead_letter(message, kind, reason, on_delivery_for(message, True))
            else:
                produce(output_topic, message.key(), output, None, on_delivery_for(message, False))
        producer.poll(0)
        offsets.store()

    # Drain: wait for every output in flight, store, commit, leave the group.
    while len(producer) and offsets.failed is None:
        producer.flush(1)
    offsets.store()
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as err:
        if err.args[0].code() != KafkaError._NO_OFFSET:
            raise
    consumer.close()
    if offsets.failed:
        sys.exit(f"python_loop: {offsets.failed}")
    print("python_loop: stopped after the final commit", file=sys.stderr)


if __name__ == "__main__":
    main()
