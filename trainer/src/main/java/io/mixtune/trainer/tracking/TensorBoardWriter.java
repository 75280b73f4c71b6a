package io.mixtune.trainer.tracking;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.DoubleSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * One TensorBoard event file, {@code events.out.tfevents.<secs>.<host>.<pid>.<n>} as TensorBoard's own writer names
 * it: TFRecord-framed {@code Event} protos, the first saying {@code file_version: "brain.Event:2"}, then a
 * {@code SessionLog START} at the first step this file writes, then scalars and texts. Each event is handed to the OS
 * as it is written, so a killed run keeps every event it wrote.
 *
 * <p>No maintained Java library on Maven Central writes these files (TensorFlow Java's summary ops need its native
 * runtime), and the format needs a handful of protobuf fields: they are encoded by hand ({@link ProtoMessage}).
 *
 * <p>A resumed run writes a new file beside the old ones, and TensorBoard reads it as the continuation of one run:
 * its START event at step S+1 (S the checkpoint's step) makes TensorBoard's Python loaders ({@code EventAccumulator},
 * {@code plugin_event_accumulator}, for files of version 2) drop every event already read with step >= S+1, which the
 * run that stopped wrote after its last checkpoint; the plugin loader ignores a run's first START, hence one in every
 * file. The Rust data server (TensorBoard's default loader) needs no START: in each tag's reservoir a value at a step
 * not beyond the last one read evicts those at that step and later. Files are read in name order, and
 * {@link #open} keeps the newest file's name last.
 */
public final class TensorBoardWriter implements AutoCloseable {
    public static final String FILE_PREFIX = "events.out.tfevents.";
    private static final Pattern FILE_NAME = Pattern.compile(Pattern.quote(FILE_PREFIX) + "(\\d+)\\..*");
    /** TensorBoard's writer numbers the files one process opens; so does this one. */
    private static final AtomicInteger FILES_OPENED = new AtomicInteger();

    // Event fields (tensorboard/compat/proto/event.proto).
    private static final int EVENT_WALL_TIME = 1;
    private static final int EVENT_STEP = 2;
    private static final int EVENT_FILE_VERSION = 3;
    private static final int EVENT_SUMMARY = 5;
    private static final int EVENT_SESSION_LOG = 7;
    private static final int SESSION_LOG_STATUS = 1;
    private static final int SESSION_LOG_START = 1;
    // Summary and Summary.Value (summary.proto).
    private static final int SUMMARY_VALUE = 1;
    private static final int VALUE_TAG = 1;
    private static final int VALUE_SIMPLE_VALUE = 2;
    private static final int VALUE_TENSOR = 8;
    private static final int VALUE_METADATA = 9;
    private static final int METADATA_PLUGIN_DATA = 1;
    private static final int PLUGIN_DATA_PLUGIN_NAME = 1;
    // TensorProto (tensor.proto) and DataType (types.proto).
    private static final int TENSOR_DTYPE = 1;
    private static final int TENSOR_SHAPE = 2;
    private static final int TENSOR_STRING_VAL = 8;
    private static final int DT_STRING = 7;

    private final Path file;
    private final OutputStream out;
    private final DoubleSupplier wallTime;

    TensorBoardWriter(Path file, long firstStep, DoubleSupplier wallTime) {
        this.file = file;
        this.wallTime = wallTime;
        try {
            out = Files.newOutputStream(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + file + ": " + e.getMessage(), e);
        }
        write(event(0).string(EVENT_FILE_VERSION, "brain.Event:2"));
        write(event(firstStep).message(EVENT_SESSION_LOG, new ProtoMessage().varint(SESSION_LOG_STATUS,
                SESSION_LOG_START)));
    }

    /**
     * A new event file in {@code dir} (created if missing) whose events start at {@code firstStep}. Its name sorts
     * after every event file already there, even one written within the same second by another host or process.
     */
    public static TensorBoardWriter open(Path dir, long firstStep) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + dir + ": " + e.getMessage(), e);
        }
        long seconds = System.currentTimeMillis() / 1000;
        for (Path earlier : eventFiles(dir)) {
            Matcher name = FILE_NAME.matcher(earlier.getFileName().toString());
            if (name.matches() && name.group(1).length() <= 18) {
                seconds = Math.max(seconds, Long.parseLong(name.group(1)) + 1);
            }
        }
        String name = String.format("%s%010d.%s.%d.%d", FILE_PREFIX, seconds, hostName(), ProcessHandle.current().pid(),
                FILES_OPENED.getAndIncrement());
        return new TensorBoardWriter(dir.resolve(name), firstStep, () -> System.currentTimeMillis() / 1000.0);
    }

    /** The event files in {@code dir}, in name order (TensorBoard's reading order); none when it does not exist. */
    public static List<Path> eventFiles(Path dir) {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.filter(entry -> isEventFile(entry.getFileName().toString()) && Files.isRegularFile(entry))
                    .sorted().toList();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + dir + ": " + e.getMessage(), e);
        }
    }

    public static boolean isEventFile(String name) {
        return name.startsWith(FILE_PREFIX);
    }

    /** A scalar, stored as TensorBoard stores {@code add_scalar}'s: a float32 {@code simple_value}. */
    public void scalar(String tag, long step, double value) {
        write(event(step).message(EVENT_SUMMARY, new ProtoMessage().message(SUMMARY_VALUE, new ProtoMessage()
                .string(VALUE_TAG, tag).fixed32(VALUE_SIMPLE_VALUE, (float) value))));
    }

    /** Markdown for TensorBoard's Text tab: a scalar DT_STRING tensor tagged for the text plugin. */
    public void text(String tag, long step, String markdown) {
        ProtoMessage metadata = new ProtoMessage().message(METADATA_PLUGIN_DATA, new ProtoMessage()
                .string(PLUGIN_DATA_PLUGIN_NAME, "text"));
        ProtoMessage tensor = new ProtoMessage().varint(TENSOR_DTYPE, DT_STRING)
                .message(TENSOR_SHAPE, new ProtoMessage())
                .bytes(TENSOR_STRING_VAL, markdown.getBytes(StandardCharsets.UTF_8));
        write(event(step).message(EVENT_SUMMARY, new ProtoMessage().message(SUMMARY_VALUE, new ProtoMessage()
                .string(VALUE_TAG, tag).message(VALUE_TENSOR, tensor).message(VALUE_METADATA, metadata))));
    }

    public Path file() {
        return file;
    }

    private ProtoMessage event(long step) {
        return new ProtoMessage().fixed64(EVENT_WALL_TIME, wallTime.getAsDouble()).varint(EVENT_STEP, step);
    }

    private void write(ProtoMessage event) {
        try {
            out.write(TfRecord.frame(event.toByteArray()));
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    /** As in the file names TensorBoard writes; only characters that are safe in a file name are kept. */
    private static String hostName() {
        String host;
        try {
            host = InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            host = "localhost";
        }
        host = host.replaceAll("[^A-Za-z0-9._-]", "_");
        return host.isEmpty() ? "localhost" : host;
    }
}
