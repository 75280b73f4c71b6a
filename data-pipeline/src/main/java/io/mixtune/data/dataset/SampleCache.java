package io.mixtune.data.dataset;

import io.mixtune.data.read.ChatFileReader;
import io.mixtune.data.template.CustomTemplateConfig;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.CRC32C;
import java.util.zip.CheckedInputStream;
import java.util.zip.CheckedOutputStream;

/**
 * The tokenized dataset of a recipe's {@code data:} section, kept in {@code <directory>/<key>.bin} so that training
 * and {@code mixtune data prepare} tokenize it once. The key is a SHA-256 over everything the samples depend on: each
 * data file's path, size and content hash, the tokenizer.json bytes and its BOS/EOS ids, the template and its strings,
 * max_seq_len, packing, loss_on, format, dataset_text_field, skip_invalid, the validation split and the seed, and
 * {@link #FORMAT_VERSION}.
 * Changing any of them names another file, so the cache rebuilds without ever being compared field by field.
 *
 * <p>File layout, big-endian: magic {@code MIXTDATA}, int32 format version, the 32-byte key; the report (int64
 * conversations, samples, tokens, target tokens, trailing turns dropped, targets cut, ended after the last answer;
 * int32 reasons, each a string and an int64 count); int32 train and validation sample counts; per sample int32 length, int32 input ids, int32 labels
 * (-100 ignored), its source as a string; last the int32 CRC32C of every byte before it. A string is an int32 byte
 * count and UTF-8. A file that is truncated, fails its checksum or has another key is rebuilt, never used.
 */
public final class SampleCache {
    /**
     * 3 since 2026-12-07: format auto reads text and prompt-completion records, which it counted as invalid before (a
     * cache written with skip_invalid then holds another sample set than a fresh read).
     */
    public static final int FORMAT_VERSION = 3;
    private static final byte[] MAGIC = "MIXTDATA".getBytes(StandardCharsets.US_ASCII);
    private static final int HASH_BUFFER = 1 << 20;

    /**
     * Where the tokenizer comes from: a tokenizer.json's bytes (which go into the key), the special ids, and the
     * tokenizer_config.json and chat_template.jinja beside it (null where there is none), whose template
     * {@code data.template: auto} and {@code hf} use ({@link JinjaChatTemplate#fromTokenizerFiles}: the .jinja first,
     * as AutoTokenizer reads it).
     *
     * @param configName how errors name the tokenizer_config.json (also when it is absent)
     * @param templateName how errors name the chat_template.jinja
     * @param template the chat_template.jinja's text
     * @param additionalTemplates each additional_chat_templates/NAME.jinja's text by NAME (data.template: hf:NAME)
     */
    public record TokenizerFile(String name, byte[] json, long bosId, long eosId, String configName, byte[] config,
            String templateName, String template, Map<String, String> additionalTemplates) {
        public TokenizerFile {
            additionalTemplates = additionalTemplates == null ? Map.of()
                    : java.util.Collections.unmodifiableMap(new TreeMap<>(additionalTemplates));
        }

        public TokenizerFile(String name, byte[] json, long bosId, long eosId, String configName, byte[] config,
                String templateName, String template) {
            this(name, json, bosId, eosId, configName, config, templateName, template, Map.of());
        }

        public TokenizerFile(String name, byte[] json, long bosId, long eosId) {
            this(name, json, bosId, eosId, sibling(name, CONFIG_FILE), null);
        }

        public TokenizerFile(String name, byte[] json, long bosId, long eosId, String configName, byte[] config) {
            this(name, json, bosId, eosId, configName, config, sibling(name, JinjaChatTemplate.TEMPLATE_FILE), null);
        }

        private static final String CONFIG_FILE = "tokenizer_config.json";

        public static TokenizerFile of(Path tokenizerJson, long bosId, long eosId) {
            Path config = tokenizerJson.resolveSibling(CONFIG_FILE);
            Path template = tokenizerJson.resolveSibling(JinjaChatTemplate.TEMPLATE_FILE);
            Path additional = tokenizerJson.resolveSibling(JinjaChatTemplate.TEMPLATE_DIR);
            try {
                Map<String, String> named = new TreeMap<>();
                if (Files.isDirectory(additional)) {
                    // transformers globs *.jinja there, not deeper
                    try (var files = Files.newDirectoryStream(additional, "*.jinja")) {
                        for (Path file : files) {
                            String fileName = file.getFileName().toString();
                            named.put(fileName.substring(0, fileName.length() - ".jinja".length()),
                                    Files.readString(file));
                        }
                    }
                }
                return new TokenizerFile(tokenizerJson.toString(), Files.readAllBytes(tokenizerJson), bosId, eosId,
                        config.toString(), Files.isRegularFile(config) ? Files.readAllBytes(config) : null,
                        template.toString(), Files.isRegularFile(template) ? Files.readString(template) : null,
                        named);
            } catch (NoSuchFileException e) {
                throw new UncheckedIOException(tokenizerJson + ": no such tokenizer.json", e);
            } catch (IOException e) {
                throw new UncheckedIOException(tokenizerJson + ", " + config + " or " + template + ": cannot be read: "
                        + e.getMessage(), e);
            }
        }

        /** A tokenizer.json on the classpath, such as {@code ModelPreset.MISTRAL_V1_TOKENIZER}. */
        public static TokenizerFile resource(String resource, long bosId, long eosId) {
            String configResource = sibling(resource, CONFIG_FILE);
            try (InputStream in = SampleCache.class.getClassLoader().getResourceAsStream(resource);
                    InputStream config = SampleCache.class.getClassLoader().getResourceAsStream(configResource)) {
                if (in == null) {
                    throw new IllegalArgumentException("no tokenizer resource " + resource + " on the classpath");
                }
                return new TokenizerFile(resource + " (bundled)", in.readAllBytes(), bosId, eosId,
                        configResource + " (bundled)", config == null ? null : config.readAllBytes());
            } catch (IOException e) {
                throw new UncheckedIOException(resource + ": cannot be read: " + e.getMessage(), e);
            }
        }

        private static String sibling(String tokenizerJson, String file) {
            int slash = tokenizerJson.lastIndexOf('/');
            return tokenizerJson.substring(0, slash + 1) + file;
        }

        public TextTokenizer open() {
            return TextTokenizer.read(new ByteArrayInputStream(json), name, bosId, eosId);
        }

        /** Where the named templates are (additional_chat_templates/ beside tokenizer.json), for errors. */
        public String templateDir() {
            return sibling(name, JinjaChatTemplate.TEMPLATE_DIR);
        }

        /** The named templates, as {@link JinjaChatTemplate#namedTemplates}; empty where the model has one or none. */
        public Map<String, JinjaChatTemplate> namedTemplates() {
            return JinjaChatTemplate.namedTemplates(configName, config, templateName, template, additionalTemplates,
                    named -> templateDir() + "/" + named + ".jinja");
        }

        /**
         * Why a chat without a template name has no template on this model, as transformers 5.18 refuses it
         * (tokenization_utils_base's get_chat_template: named templates, additional_chat_templates/NAME.jinja, and no
         * chat_template.jinja make a dict without "default", which has replaced even a chat_template of
         * tokenizer_config.json: interop/make_named_template_goldens.py checks both); null where it has one or none.
         */
        public String noDefaultTemplate() {
            if (additionalTemplates.isEmpty() || template != null) {
                return null;
            }
            List<String> names = List.copyOf(additionalTemplates.keySet());
            return templateDir() + " holds the named templates " + names + " and there is no chat_template.jinja, so "
                    + "no default template (transformers: \"This model has multiple chat templates with no default "
                    + "specified! Please either pass a chat template or the name of the template you wish to use to "
                    + "the `chat_template` argument. Available template names are "
                    + names.stream().map(n -> "'" + n + "'").toList() + ".\")";
        }

        /** The model's own chat template, as AutoTokenizer reads it; null where it has none. */
        public JinjaChatTemplate chatTemplate() {
            return JinjaChatTemplate.fromTokenizerFiles(configName, config, templateName, template);
        }
    }

    /** How a load went. */
    public enum Status {
        /** Read from the cache file. */
        HIT,
        /** Tokenized and written: there was no file for this key. */
        BUILT,
        /** Tokenized and written again: the file for this key was damaged. */
        REBUILT
    }

    /**
     * @param file the cache file for this key
     * @param note why the cache was rebuilt (the damage found), else null
     */
    public record Loaded(ChatDataset dataset, Path file, Status status, String note) {}

    /** Tokenizes the data section: what a cache miss runs. */
    interface Tokenize {
        ChatDataset run(DataConfig config, TokenizerFile tokenizer, long seed);
    }

    private final Path directory;
    private final Tokenize tokenize;

    /** @param directory where cache files live, created when missing */
    public SampleCache(Path directory) {
        this(directory, SampleCache::tokenize);
    }

    SampleCache(Path directory, Tokenize tokenize) {
        this.directory = directory;
        this.tokenize = tokenize;
    }

    /** The samples of {@code config}, from the cache when it holds them, else tokenized and cached (atomically). */
    public Loaded load(DataConfig config, TokenizerFile tokenizer, long seed) {
        String hex = key(config, tokenizer, seed);
        byte[] key = HexFormat.of().parseHex(hex);
        Path file = directory.resolve(hex + ".bin");
        String note = null;
        if (Files.exists(file)) {
            try {
                return new Loaded(read(file, key), file, Status.HIT, null);
            } catch (DamagedCacheException e) {
                note = "data cache " + file + " is damaged (" + e.getMessage() + "): rebuilding it";
            }
        }
        ChatDataset dataset = tokenize.run(config, tokenizer, seed);
        write(file, key, dataset);
        return new Loaded(dataset, file, note == null ? Status.BUILT : Status.REBUILT, note);
    }

    /** Tokenizes the data section without the cache: what a miss runs, and what a one-off evaluation of a file runs. */
    public static ChatDataset tokenize(DataConfig config, TokenizerFile tokenizer, long seed) {
        try (TextTokenizer text = tokenizer.open()) {
            SampleBuilder builder = new SampleBuilder(config.chatTemplate(tokenizer), text,
                    config.sampleLength(), config.lossPolicy());
            return ChatDataset.load(paths(config.files()), paths(config.validationFiles()), config.validationRatio(),
                    seed, config.chatFormat(), config.datasetTextField(), builder, config.skipInvalid());
        }
    }

    private static List<Path> paths(List<String> files) {
        return files.stream().map(DataConfig::file).toList();
    }

    // ---- key -----------------------------------------------------------------------------------------------------

    /**
     * The cache key, in hex: SHA-256 over a line per component, so what the key covers can be read off this method.
     * Hashes every data file's bytes.
     */
    public static String key(DataConfig config, TokenizerFile tokenizer, long seed) {
        MessageDigest key = sha256();
        StringBuilder text = new StringBuilder();
        text.append("format_version=").append(FORMAT_VERSION).append('\n');
        for (String file : config.files()) {
            text.append("file=").append(file).append(' ').append(fileHash(DataConfig.file(file))).append('\n');
        }
        for (String file : config.validationFiles()) {
            text.append("validation_file=").append(file).append(' ').append(fileHash(DataConfig.file(file))).append('\n');
        }
        text.append("tokenizer=").append(HexFormat.of().formatHex(sha256().digest(tokenizer.json())))
                .append(" bos=").append(tokenizer.bosId()).append(" eos=").append(tokenizer.eosId())
                // Caches written before special tokens in text stayed text (TextTokenizer) hold the wrong ids.
                .append(" special_tokens_in_text=text").append('\n');
        // The template as resolved: auto that falls back to mistral keys as mistral, so those caches stay valid.
        ChatTemplate template = config.chatTemplate(tokenizer);
        text.append("template=").append(template.name()).append('\n');
        if (template instanceof HfChatTemplate hf) {
            JinjaChatTemplate jinja = hf.template();
            for (String value : Arrays.asList(jinja.source(), jinja.bosToken(), jinja.eosToken())) {
                // a bos_token null (the template sees none) as a line no length-prefixed string can be
                text.append(value == null ? "none" : value.length() + ":" + value).append('\n');
            }
        }
        if (template instanceof MistralTemplate mistral && mistral.bosId() != tokenizer.bosId()) {
            // auto on the built-in's Jinja with tokenizer_config.json's bos_token null: no BOS, whatever config.json says
            text.append("template_bos=").append(mistral.bosId()).append('\n');
        }
        if (config.template().equals("custom")) {
            // The record's toString would print the strings unquoted; each is length-prefixed instead.
            CustomTemplateConfig custom = config.customTemplate();
            for (String value : List.of(custom.systemPrefix(), custom.systemSuffix(), custom.userPrefix(),
                    custom.userSuffix(), custom.assistantPrefix(), custom.assistantSuffix(), custom.afterAssistant())) {
                text.append(value.length()).append(':').append(value).append('\n');
            }
            text.append("bos=").append(custom.bos()).append(" eos_after_assistant=").append(custom.eosAfterAssistant())
                    .append('\n');
        }
        text.append("max_seq_len=").append(config.maxSeqLen()).append('\n');
        text.append("packing=").append(config.packing()).append('\n');
        if (!config.packer().truncates()) {
            // samples kept whole for bfd_split and wrapped; only then, so that the keys of bfd recipes stay
            text.append("packing_strategy=").append(config.packingStrategy()).append('\n');
        }
        text.append("loss_on=").append(config.lossOn()).append('\n');
        text.append("format=").append(config.format()).append('\n');
        if (!config.datasetTextField().equals(ChatFileReader.TEXT_FIELD)) {
            // only where it is not the default, so that the keys of recipes without it stay what they were
            String field = config.datasetTextField();
            text.append("dataset_text_field=").append(field.length()).append(':').append(field).append('\n');
        }
        text.append("skip_invalid=").append(config.skipInvalid()).append('\n');
        text.append("validation_ratio=").append(Double.toString(config.validationRatio())).append('\n');
        text.append("seed=").append(seed).append('\n');
        return HexFormat.of().formatHex(key.digest(text.toString().getBytes(StandardCharsets.UTF_8)));
    }

    /** "size sha256" of a file's bytes, read in 1 MiB blocks. */
    private static String fileHash(Path file) {
        MessageDigest digest = sha256();
        long size = 0;
        try (InputStream in = Files.newInputStream(file)) {
            byte[] buffer = new byte[HASH_BUFFER];
            for (int n = in.read(buffer); n >= 0; n = in.read(buffer)) {
                digest.update(buffer, 0, n);
                size += n;
            }
        } catch (NoSuchFileException e) {
            throw new UncheckedIOException(file + ": no such data file", e);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
        return size + " " + HexFormat.of().formatHex(digest.digest());
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java runtime has SHA-256", e);
        }
    }

    // ---- file ----------------------------------------------------------------------------------------------------

    /** Writes to a temporary file beside the target, then renames it over the target. */
    static void write(Path file, byte[] key, ChatDataset dataset) {
        Path temporary = null;
        try {
            Files.createDirectories(file.toAbsolutePath().getParent());
            temporary = Files.createTempFile(file.toAbsolutePath().getParent(), file.getFileName() + ".", ".tmp");
            CheckedOutputStream checked = new CheckedOutputStream(
                    new BufferedOutputStream(Files.newOutputStream(temporary), 1 << 16), new CRC32C());
            try (DataOutputStream out = new DataOutputStream(checked)) {
                out.write(MAGIC);
                out.writeInt(FORMAT_VERSION);
                out.write(key);
                writeReport(out, dataset.report());
                out.writeInt(dataset.train().size());
                out.writeInt(dataset.validation().size());
                for (List<TokenizedSample> samples : List.of(dataset.train(), dataset.validation())) {
                    for (TokenizedSample sample : samples) {
                        writeSample(out, sample);
                    }
                }
                out.writeInt((int) checked.getChecksum().getValue());
            }
            try {
                Files.move(temporary, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(temporary, file, StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("data cache " + file + " cannot be written: " + e.getMessage(), e);
        } finally {
            if (temporary != null) {
                try {
                    Files.deleteIfExists(temporary);
                } catch (IOException ignored) {
                    // Left behind only if the disk fails under us; the next write uses a new name.
                }
            }
        }
    }

    private static void writeReport(DataOutputStream out, DataReport report) throws IOException {
        for (long count : new long[] {report.conversations(), report.samples(), report.tokens(), report.targetTokens(),
                report.trailingTurnsDropped(), report.targetsCut(), report.endedAfterAnswer()}) {
            out.writeLong(count);
        }
        Map<String, Long> skipped = new TreeMap<>(report.skipped());
        out.writeInt(skipped.size());
        for (Map.Entry<String, Long> entry : skipped.entrySet()) {
            writeString(out, entry.getKey());
            out.writeLong(entry.getValue());
        }
    }

    private static void writeSample(DataOutputStream out, TokenizedSample sample) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(sample.length() * 2 * Integer.BYTES);
        for (long id : sample.inputIds()) {
            buffer.putInt(Math.toIntExact(id));
        }
        for (long label : sample.labels()) {
            buffer.putInt(Math.toIntExact(label));
        }
        out.writeInt(sample.length());
        out.write(buffer.array());
        writeString(out, sample.source());
    }

    private static void writeString(DataOutputStream out, String text) throws IOException {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        out.writeInt(bytes.length);
        out.write(bytes);
    }

    /** The cache file cannot be used; the message says why. */
    static final class DamagedCacheException extends Exception {
        DamagedCacheException(String message) {
            super(message);
        }
    }

    static ChatDataset read(Path file, byte[] key) throws DamagedCacheException {
        CRC32C crc = new CRC32C();
        try (InputStream raw = new BufferedInputStream(Files.newInputStream(file), 1 << 16);
                DataInputStream in = new DataInputStream(new CheckedInputStream(raw, crc))) {
            byte[] magic = in.readNBytes(MAGIC.length);
            if (!Arrays.equals(MAGIC, magic)) {
                throw new DamagedCacheException("not a mixtune data cache");
            }
            int version = in.readInt();
            if (version != FORMAT_VERSION) {
                throw new DamagedCacheException("format version " + version + ", expected " + FORMAT_VERSION);
            }
            if (!Arrays.equals(key, in.readNBytes(key.length))) {
                throw new DamagedCacheException("its key is not its name");
            }
            DataReport report = readReport(in);
            int trainCount = count(in.readInt(), "train samples");
            int validationCount = count(in.readInt(), "validation samples");
            List<TokenizedSample> train = readSamples(in, trainCount);
            List<TokenizedSample> validation = readSamples(in, validationCount);
            int expected = (int) crc.getValue();
            int stored = new DataInputStream(raw).readInt();
            if (stored != expected) {
                throw new DamagedCacheException("checksum mismatch");
            }
            if (raw.read() != -1) {
                throw new DamagedCacheException("bytes after the checksum");
            }
            return new ChatDataset(train, validation, report);
        } catch (EOFException e) {
            throw new DamagedCacheException("truncated");
        } catch (IOException e) {
            throw new DamagedCacheException("unreadable: " + e.getMessage());
        } catch (IllegalArgumentException | ArithmeticException | OutOfMemoryError e) {
            // A damaged length can ask for an absurd array before the checksum is reached.
            throw new DamagedCacheException("inconsistent contents: " + e.getMessage());
        }
    }

    private static DataReport readReport(DataInputStream in) throws IOException {
        long[] counts = new long[7];
        for (int i = 0; i < counts.length; i++) {
            counts[i] = in.readLong();
        }
        int reasons = count(in.readInt(), "skip reasons");
        Map<String, Long> skipped = new TreeMap<>();
        for (int i = 0; i < reasons; i++) {
            skipped.put(readString(in), in.readLong());
        }
        return DataReport.of(counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], skipped);
    }

    private static List<TokenizedSample> readSamples(DataInputStream in, int count) throws IOException {
        List<TokenizedSample> samples = new ArrayList<>(Math.min(count, 1 << 20));
        for (int s = 0; s < count; s++) {
            int length = count(in.readInt(), "sample length");
            ByteBuffer buffer = ByteBuffer.wrap(readBytes(in, Math.multiplyExact(length, 2 * Integer.BYTES)));
            long[] ids = new long[length];
            long[] labels = new long[length];
            for (int t = 0; t < length; t++) {
                ids[t] = buffer.getInt();
            }
            for (int t = 0; t < length; t++) {
                labels[t] = buffer.getInt();
            }
            samples.add(new TokenizedSample(ids, labels, readString(in)));
        }
        return samples;
    }

    private static String readString(DataInputStream in) throws IOException {
        return new String(readBytes(in, count(in.readInt(), "string length")), StandardCharsets.UTF_8);
    }

    /** Exactly n bytes; readNBytes grows its array as bytes arrive, so a damaged length cannot allocate gigabytes. */
    private static byte[] readBytes(DataInputStream in, int n) throws IOException {
        byte[] bytes = in.readNBytes(n);
        if (bytes.length != n) {
            throw new EOFException();
        }
        return bytes;
    }

    private static int count(int value, String what) {
        if (value < 0) {
            throw new IllegalArgumentException("negative count of " + what);
        }
        return value;
    }
}
