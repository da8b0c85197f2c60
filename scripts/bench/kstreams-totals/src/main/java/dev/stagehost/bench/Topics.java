package dev.stagehost.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;

/**
 * Creates or deletes the bench's topics in one JVM (kafka-topics would start
 * one per topic).
 *
 *   Topics BOOTSTRAP create PARTITIONS NAME[+append]...   (+append: LogAppendTime timestamps)
 *   Topics BOOTSTRAP delete NAME...
 *   Topics BOOTSTRAP delete-prefix PREFIX
 */
public final class Topics {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            switch (args[1]) {
                case "create" -> {
                    int partitions = Integer.parseInt(args[2]);
                    List<NewTopic> topics = new ArrayList<>();
                    for (int i = 3; i < args.length; i++) {
                        String name = args[i];
                        NewTopic topic;
                        if (name.endsWith("+append")) {
                            topic = new NewTopic(name.substring(0, name.length() - 7), partitions, (short) 1)
                                    .configs(Map.of("message.timestamp.type", "LogAppendTime"));
                        } else {
                            topic = new NewTopic(name, partitions, (short) 1);
                        }
                        topics.add(topic);
                    }
                    admin.createTopics(topics).all().get();
                }
                case "delete" -> admin.deleteTopics(List.of(args).subList(2, args.length)).all().get();
                case "delete-prefix" -> {
                    List<String> names = admin.listTopics().names().get().stream()
                            .filter(t -> t.startsWith(args[2])).toList();
                    if (!names.isEmpty()) admin.deleteTopics(names).all().get();
                    System.err.println("topics: deleted " + names.size() + " topics starting " + args[2]);
                }
                default -> throw new IllegalArgumentException(args[1]);
            }
        }
    }
}
