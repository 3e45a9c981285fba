// A Kafka -> HTTP sink on Confluent Parallel Consumer 0.5.3.2: the Java peer of lagpilot-consumer in
// bench/consumer. Each record's value is POSTed synchronously (one shared JDK HttpClient, HTTP/1.1) from
// PC's worker pool of --threads; a non-2xx answer or an I/O error throws, so PC retries the record.
// Build and classpath: scripts/fetch-parallel-consumer.sh. Runs until SIGTERM; prints "pc ready" once
// subscribed.
//
//   java -cp CLASSPATH PcHttpSink --bootstrap HOST:PORT --topic T --group G --threads 8 \
//        --url http://127.0.0.1:8080/fast [--ordering KEY|PARTITION|UNORDERED]

import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class PcHttpSink {
    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(30);

    private PcHttpSink() {}

    private static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> a = new HashMap<>();
        a.put("ordering", "KEY");
        a.put("threads", "8");
        for (int i = 0; i < argv.length; i++) {
            String k = argv[i];
            if (!k.startsWith("--")) throw new IllegalArgumentException("unexpected argument: " + k);
            String name = k.substring(2), value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else {
                if (i + 1 >= argv.length) throw new IllegalArgumentException("missing value for " + k);
                value = argv[++i];
            }
            a.put(name, value);
        }
        for (String req : List.of("bootstrap", "topic", "group", "url")) {
            if (!a.containsKey(req)) throw new IllegalArgumentException("--" + req + " is required");
        }
        return a;
    }

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> a;
        ProcessingOrder ordering;
        int threads;
        try {
            a = parseArgs(argv);
            ordering = ProcessingOrder.valueOf(a.get("ordering").toUpperCase());
            threads = Integer.parseInt(a.get("threads"));
        } catch (IllegalArgumentException e) {
            System.err.println("PcHttpSink: " + e.getMessage());
            System.err.println("usage: PcHttpSink --bootstrap HOST:PORT --topic T --group G --url URL "
                    + "[--threads N] [--ordering KEY|PARTITION|UNORDERED]");
            System.exit(2);
            return;
        }
        String topic = a.get("topic");
        URI url = URI.create(a.get("url"));

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap"));
        props.put(ConsumerConfig.GROUP_ID_CONFIG, a.get("group"));
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "pc-http-sink");
        KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());

        ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .ordering(ordering)
                .maxConcurrency(threads)
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .build();
        ParallelStreamProcessor<byte[], byte[]> processor = ParallelStreamProcessor.createEosStreamProcessor(options);

        HttpClient http = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(5))
                .build();

        CountDownLatch closing = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            closing.countDown();
            try {
                processor.closeDontDrainFirst(Duration.ofSeconds(10));
            } catch (RuntimeException e) {
                System.err.println("PcHttpSink: close failed: " + e);
            }
        }, "pc-shutdown"));

        processor.subscribe(List.of(topic));
        processor.poll(ctx -> {
            ConsumerRecord<byte[], byte[]> r = ctx.getSingleConsumerRecord();
            byte[] body = r.value() == null ? new byte[0] : r.value();
            HttpRequest req = HttpRequest.newBuilder(url)
                    .timeout(REQUEST_TIMEOUT)
                    .header("Content-Type", "application/octet-stream")
                    .header("X-Lagpilot-Topic", r.topic())
                    .header("X-Lagpilot-Partition", Integer.toString(r.partition()))
                    .header("X-Lagpilot-Offset", Long.toString(r.offset()))
                    .header("X-Lagpilot-Timestamp", Long.toString(r.timestamp()))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(body))
                    .build();
            HttpResponse<Void> resp;
            try {
                resp = http.send(req, HttpResponse.BodyHandlers.discarding());
            } catch (IOException e) {
                throw new RuntimeException("POST " + url + " failed: " + e, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new RuntimeException("interrupted", e);
            }
            int status = resp.statusCode();
            if (status < 200 || status >= 300) {
                throw new RuntimeException("POST " + url + " answered " + status + " for "
                        + r.topic() + "-" + r.partition() + "@" + r.offset());
            }
        });
        System.out.println("pc ready");
        System.out.flush();
        // Until SIGTERM (the hook closes the processor) or until PC fails by itself.
        while (!processor.isClosedOrFailed()) {
            Thread.sleep(200);
        }
        if (closing.getCount() > 0) {
            System.err.println("PcHttpSink: the parallel consumer closed or failed on its own (see its log above)");
            System.exit(1);
        }
    }
}
