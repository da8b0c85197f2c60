package dev.stagehost.bench;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Reads TOPIC from its beginning with isolation.level=read_committed until N
 * records were seen (or TIMEOUT_S passed), then checks them against what
 * Preload sent (every account's outputs count 1, 2, 3, ... with the right
 * running totals) and prints one line:
 *   done_ms=<epoch ms when the Nth record arrived> records=R first_ts=.. last_ts=.. ok=true|false
 * first_ts/last_ts are the records' timestamps (LogAppendTime on the bench's
 * output topics: when the broker appended them).
 *
 * Args: BOOTSTRAP TOPIC N ACCOUNTS TIMEOUT_S
 */
public final class Await {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        long n = Long.parseLong(args[2]);
        int accounts = Integer.parseInt(args[3]);
        long timeoutMs = Long.parseLong(args[4]) * 1000;
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("isolation.level", "read_committed");
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        props.put("max.poll.records", "10000");
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        Map<String, long[]> seen = new HashMap<>(); // account -> {count, total}
        long records = 0, firstTs = Long.MAX_VALUE, lastTs = 0, doneMs = 0;
        boolean ok = true;
        String problem = "";
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> parts = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (parts.isEmpty()) {
                List<PartitionInfo> infos = consumer.partitionsFor(topic);
                if (infos != null) for (PartitionInfo p : infos) parts.add(new TopicPartition(topic, p.partition()));
                if (parts.isEmpty()) {
                    if (System.currentTimeMillis() > deadline) throw new IllegalStateException("no topic " + topic);
                    Thread.sleep(100);
                }
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            System.out.println("ready");
            System.out.flush();
            long end = System.currentTimeMillis() + timeoutMs;
            while (records < n && System.currentTimeMillis() < end) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(50))) {
                    records++;
                    firstTs = Math.min(firstTs, r.timestamp());
                    lastTs = Math.max(lastTs, r.timestamp());
                    String v = r.value();
                    long count = field(v, "\"count\":"), total = field(v, "\"total\":");
                    long[] acc = seen.computeIfAbsent(account(v), k -> new long[2]);
                    long amount = field(v, "\"amount\":");
                    if (count != acc[0] + 1 || total != acc[1] + amount) {
                        if (ok) problem = "account " + account(v) + ": " + v + " after count " + acc[0] + " total " + acc[1];
                        ok = false;
                    }
                    acc[0] = count;
                    acc[1] = total;
                }
            }
            doneMs = System.currentTimeMillis();
        }
        if (records != n) {
            ok = false;
            problem = "saw " + records + " of " + n + " records";
        } else if (accounts > 0) {
            // Every account's final count and total, from Preload's formula.
            long[][] expect = new long[accounts][2];
            for (long i = 0; i < n; i++) {
                expect[(int) (i % accounts)][0]++;
                expect[(int) (i % accounts)][1] += i % 100 + 1;
            }
            for (int a = 0; a < accounts && ok; a++) {
                long[] got = seen.getOrDefault("acct-" + a, new long[2]);
                if (got[0] != expect[a][0] || got[1] != expect[a][1]) {
                    ok = false;
                    problem = "acct-" + a + ": count " + got[0] + " total " + got[1] + ", expected " + expect[a][0] + " " + expect[a][1];
                }
            }
        }
        System.out.printf("done_ms=%d records=%d first_ts=%d last_ts=%d ok=%b%n", doneMs, records, firstTs, lastTs, ok);
        if (!ok) System.err.println("await: " + problem);
        System.exit(ok ? 0 : 1);
    }

    /** The output's "account" string (no escapes in the bench's accounts). */
    static String account(String v) {
        int i = v.indexOf("\"account\":");
        if (i < 0) return "";
        int from = v.indexOf('"', i + 10) + 1;
        return v.substring(from, v.indexOf('"', from));
    }

    static long field(String v, String name) {
        int i = v.indexOf(name);
        if (i < 0) return Long.MIN_VALUE;
        i += name.length();
        int j = i;
        if (v.charAt(j) == '-') j++;
        while (j < v.length() && Character.isDigit(v.charAt(j))) j++;
        return Long.parseLong(v.substring(i, j));
    }
}
