package io.mixtune.bench;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.read.ChatFileReader;
import io.mixtune.data.template.LossPolicy;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The data pipeline's figures, each mode in its own JVM so that peak memory is its own:
 * <ul>
 *   <li>{@code throughput CHATS_JSONL WORK_DIR [conversations, default 20000]}: conversations/s and tokens/s reading
 *       and tokenizing the chats repeated to that many with the mistral template; the data cache (key, write, hit).
 *   <li>{@code stream WORK_DIR [conversations, default 1000000]}: resident memory while streaming a generated file of
 *       that many conversations through ChatFileReader, and the time to hash it for the cache key.
 * </ul>
 * The files written in WORK_DIR are deleted at the end.
 */
public final class DataPipelineBenchmark {
    static final int MAX_SEQ_LEN = 4096;

    public static void main(String[] args) throws IOException {
        if (args.length >= 3 && args[0].equals("throughput")) {
            Path work = Files.createDirectories(Path.of(args[2]));
            Path repeated = work.resolve("chats-repeated.jsonl");
            Path cacheDir = work.resolve("cache");
            try {
                int copies = repeat(Path.of(args[1]), repeated, args.length > 3 ? Integer.parseInt(args[3]) : 20_000);
                throughput(Path.of(args[1]), repeated, copies);
                cache(repeated, cacheDir);
            } finally {
                Files.deleteIfExists(repeated);
                if (Files.isDirectory(cacheDir)) {
                    try (var files = Files.list(cacheDir)) {
                        for (Path file : files.toList()) {
                            Files.delete(file);
                        }
                    }
                    Files.delete(cacheDir);
                }
            }
        } else if (args.length >= 2 && args[0].equals("stream")) {
            Path generated = Files.createDirectories(Path.of(args[1])).resolve("generated.jsonl");
            try {
                stream(generated, args.length > 2 ? Integer.parseInt(args[2]) : 1_000_000);
            } finally {
                Files.deleteIfExists(generated);
            }
        } else {
            System.err.println("usage: DataPipelineBenchmark throughput CHATS_JSONL WORK_DIR [conversations] | "
                    + "stream WORK_DIR [conversations]");
            System.exit(2);
        }
    }

    /** chats.jsonl repeated until it holds at least {@code target} lines; returns the number of copies. */
    static int repeat(Path chats, Path out, int target) throws IOException {
        List<String> lines = Files.readAllLines(chats).stream().filter(l -> !l.isBlank()).toList();
        int copies = (target + lines.size() - 1) / lines.size();
        try (BufferedWriter writer = Files.newBufferedWriter(out, StandardCharsets.UTF_8)) {
            for (int c = 0; c < copies; c++) {
                for (String line : lines) {
                    writer.write(line);
                    writer.write('\n');
                }
            }
        }
        return copies;
    }

    static void throughput(Path chats, Path repeated, int copies) throws IOException {
        try (TextTokenizer tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2)) {
            SampleBuilder builder = new SampleBuilder(new MistralTemplate(1, 2), tokenizer, MAX_SEQ_LEN,
                    LossPolicy.ALL_ASSISTANT_TURNS);
            for (int warmUp = 0; warmUp < 3; warmUp++) {
                ChatDataset.read(List.of(chats), null, builder, false, new DataReport());
            }
            DataReport report = new DataReport();
            long start = System.nanoTime();
            ChatDataset.read(List.of(repeated), null, builder, false, report);
            double seconds = (System.nanoTime() - start) / 1e9;
            System.out.printf(Locale.ROOT, "read + tokenize (mistral template, max_seq_len %d) %s x %d = %,d "
                    + "conversations, %.1f MB: %.2f s, %,.0f conversations/s, %,.0f tokens/s (%,d tokens)%n",
                    MAX_SEQ_LEN, chats.getFileName(), copies, report.conversations(), Files.size(repeated) / 1e6,
                    seconds, report.conversations() / seconds, report.tokens() / seconds, report.tokens());

            List<Conversation> conversations = new ArrayList<>();
            new ChatFileReader(repeated, null).read(conversations::add, e -> {
                throw e;
            });
            start = System.nanoTime();
            long tokens = 0;
            for (Conversation conversation : conversations) {
                tokens += builder.build(conversation).sample().length();
            }
            seconds = (System.nanoTime() - start) / 1e9;
            System.out.printf(Locale.ROOT, "  of which tokenizing alone (conversations already in memory): %.2f s, "
                    + "%,.0f conversations/s, %,.0f tokens/s%n", seconds, conversations.size() / seconds,
                    tokens / seconds);
        }
    }

    static void cache(Path repeated, Path cacheDir) throws IOException {
        DataConfig config = new DataConfig(List.of(repeated.toString()), null, 0.0, "auto", "mistral", null,
                MAX_SEQ_LEN, false, "all_assistant_turns", false);
        TokenizerFile tokenizer = TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        SampleCache cache = new SampleCache(cacheDir);
        long start = System.nanoTime();
        SampleCache.Loaded built = cache.load(config, tokenizer, 0);
        double building = (System.nanoTime() - start) / 1e9;
        start = System.nanoTime();
        SampleCache.Loaded hit = cache.load(config, tokenizer, 0);
        double reading = (System.nanoTime() - start) / 1e9;
        System.out.printf(Locale.ROOT, "data cache: %s in %.2f s (tokenize + write %.1f MB); %s in %.2f s, %.1fx "
                + "faster%n", built.status(), building, Files.size(built.file()) / 1e6, hit.status(), reading,
                building / reading);
    }

    /**
     * Streams a generated file through ChatFileReader, keeping nothing, and prints peak resident memory (VmHWM) as the
     * count grows: flat when reading streams.
     */
    static void stream(Path generated, int count) throws IOException {
        long start = System.nanoTime();
        try (BufferedWriter writer = Files.newBufferedWriter(generated, StandardCharsets.UTF_8)) {
            for (int i = 0; i < count; i++) {
                writer.write("{\"messages\": [{\"role\": \"system\", \"content\": \"You are assistant number " + i
                        + ".\"}, {\"role\": \"user\", \"content\": \"What is " + i + " + " + (i % 97) + "? Show the "
                        + "working.\"}, {\"role\": \"assistant\", \"content\": \"" + i + " + " + (i % 97) + " = "
                        + (i + i % 97) + ". Add the units, then carry the tens.\"}, {\"role\": \"user\", \"content\": "
                        + "\"Thanks!\"}, {\"role\": \"assistant\", \"content\": \"You are welcome.\"}]}\n");
            }
        }
        System.out.printf(Locale.ROOT, "generated %,d conversations, %.0f MB, in %.1f s%n", count,
                Files.size(generated) / 1e6, (System.nanoTime() - start) / 1e9);
        DataConfig config = new DataConfig(List.of(generated.toString()), null, 0.0, "auto", "mistral", null,
                MAX_SEQ_LEN, false, "all_assistant_turns", false);
        TokenizerFile tokenizer = TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        for (String when : List.of("first", "second")) {
            start = System.nanoTime();
            SampleCache.key(config, tokenizer, 0);
            double seconds = (System.nanoTime() - start) / 1e9;
            System.out.printf(Locale.ROOT, "cache key, %s time (SHA-256 of the file's %.0f MB and the tokenizer): "
                    + "%.2f s, %.0f MB/s%n", when, Files.size(generated) / 1e6, seconds,
                    Files.size(generated) / 1e6 / seconds);
        }
        System.gc();
        long before = QloraMemoryBenchmark.status("VmHWM");
        long[] seen = {0};
        long[] messages = {0};
        long[] next = {count / 10};
        long readStart = System.nanoTime();
        new ChatFileReader(generated, null).read(conversation -> {
            messages[0] += conversation.messages().size();
            if (++seen[0] == next[0] || seen[0] == count) {
                next[0] = seen[0] == count / 10 ? count / 2 : count;
                try {
                    System.out.printf(Locale.ROOT, "  after %,9d conversations: peak RSS (VmHWM) %.0f MB, RSS %.0f MB, "
                            + "heap used %.0f MB%n", seen[0], QloraMemoryBenchmark.status("VmHWM") / 1e6,
                            QloraMemoryBenchmark.status("VmRSS") / 1e6, (Runtime.getRuntime().totalMemory()
                                    - Runtime.getRuntime().freeMemory()) / 1e6);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }
        }, e -> {
            throw e;
        });
        double seconds = (System.nanoTime() - readStart) / 1e9;
        System.out.printf(Locale.ROOT, "streamed %,d conversations (%,d messages) in %.1f s, %,.0f conversations/s; "
                + "peak RSS before reading %.0f MB, max heap %.0f MB%n", seen[0], messages[0], seconds,
                seen[0] / seconds, before / 1e6, Runtime.getRuntime().maxMemory() / 1e6);
    }
}
