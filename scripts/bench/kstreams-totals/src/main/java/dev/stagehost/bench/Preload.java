package dev.stagehost.bench;

import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Preloads N keyed amounts: message i is
 * {"account": "acct-(i % ACCOUNTS)", "amount": i % 100 + 1} keyed by its
 * account, or with account (and key) key-i (every key distinct) when
 * ACCOUNTS is 0.
 * Idempotent, acks=all; the default partitioner (murmur2 of the key), so a
 * key's messages share a partition.
 *
 * Args: BOOTSTRAP TOPIC N ACCOUNTS [TOPIC...]  (every topic gets the same records)
 */
public final class Preload {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long n = Long.parseLong(args[2]);
        int accounts = Integer.parseInt(args[3]);
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("acks", "all");
        props.put("enable.idempotence", "true");
        props.put("linger.ms", "20");
        props.put("batch.size", "262144");
        props.put("compression.type", "none");
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        java.util.List<String> topics = new java.util.ArrayList<>();
        topics.add(args[1]);
        for (int t = 4; t < args.length; t++) topics.add(args[t]);
        long started = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (long i = 0; i < n; i++) {
                String key = accounts > 0 ? "acct-" + (i % accounts) : "key-" + i;
                String value = "{\"account\": \"" + key + "\", \"amount\": " + (i % 100 + 1) + "}";
                for (String topic : topics) {
                    producer.send(new ProducerRecord<>(topic, key, value), (meta, err) -> {
                        if (err != null) {
                            err.printStackTrace();
                            System.exit(1);
                        }
                    });
                }
            }
            producer.flush();
        }
        System.err.printf("preload: %d records to %s in %.1f s%n", n, topics, (System.nanoTime() - started) / 1e9);
    }
}
