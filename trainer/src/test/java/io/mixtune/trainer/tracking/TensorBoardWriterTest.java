package io.mixtune.trainer.tracking;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.run.TrackingListener;
import io.mixtune.trainer.run.TrainingListener;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The event files TensorBoard reads: records byte for byte those the Python tensorboard package writes, and files read
 * back by {@link EventFileReader} (frames and CRCs checked, protobuf decoded generically).
 */
class TensorBoardWriterTest {
    /**
     * The reference records, made once with tensorboard 2.21.0 (interop/requirements.txt):
     * {@code RecordWriter(buf).write(event_pb2.Event(wall_time=1.5, ...).SerializeToString())} with the fields named in
     * each test, the bytes printed as hex.
     */
    private static final String FILE_VERSION_RECORD =
            "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c";
    /** {@code step=5, session_log=SessionLog(status=START)}. */
    private static final String START_AT_5_RECORD = "0f000000000000006d532b0909000000000000f83f10053a020801b2a7e13c";
    /** {@code step=3, summary=Summary(value=[Value(tag='loss', simple_value=2.5)])}. */
    private static final String LOSS_AT_3_RECORD =
            "1a00000000000000129bd82d09000000000000f83f10032a0d0a0b0a046c6f7373150000204081c510f9";
    /** {@code step=1, summary=Summary(value=[Value(tag='lr', simple_value=0.0)])}: a oneof member, kept at 0. */
    private static final String ZERO_LR_AT_1_RECORD =
            "1800000000000000a37f4b2209000000000000f83f10012a0b0a090a026c7215000000003e557f9a";
    /**
     * {@code step=0, summary=Summary(value=[Value(tag='recipe', metadata=SummaryMetadata(plugin_data=PluginData(
     * plugin_name='text')), tensor=TensorProto(dtype=DT_STRING, tensor_shape=TensorShapeProto(),
     * string_val=[b'a: 1']))])}.
     */
    private static final String TEXT_RECORD = "2b00000000000000861bc34b09000000000000f83f2a200a1e0a06726563697065420a0807"
            + "12004204613a20314a080a060a047465787411ababbc";

    private static final Path CHATS = Path.of("../data/samples/chats.jsonl").toAbsolutePath().normalize();

    @Test
    void maskedCrc32cMatchesTensorFlowsOnKnownVectors() {
        byte[] check = "123456789".getBytes(StandardCharsets.US_ASCII);
        // 0xE3069283 is CRC-32C's published check value (RFC 3720 B.4's catalogue); masked as TensorFlow masks it:
        // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(b'123456789') == 0xc78ab0e5.
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(check);
        assertEquals(0xE3069283L, crc.getValue());
        assertEquals(0xc78ab0e5, TfRecord.maskedCrc32c(check, 0, check.length));
        // masked_crc32c(b'hello') == 0x191c1fbb, the same function.
        assertEquals(0x191c1fbb, TfRecord.maskedCrc32c("hello".getBytes(StandardCharsets.US_ASCII), 0, 5));
    }

    @Test
    void recordsAreByteForByteThoseOfPythonsTensorboard(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("events.out.tfevents.test");
        try (TensorBoardWriter writer = new TensorBoardWriter(file, 5, () -> 1.5)) {
            writer.scalar("loss", 3, 2.5);
            writer.scalar("lr", 1, 0.0);
            writer.text("recipe", 0, "a: 1");
        }
        byte[] expected = HexFormat.of().parseHex(FILE_VERSION_RECORD + START_AT_5_RECORD + LOSS_AT_3_RECORD
                + ZERO_LR_AT_1_RECORD + TEXT_RECORD);
        assertArrayEquals(expected, Files.readAllBytes(file));
    }

    @Test
    void scalarsAndTextReadBackWithEveryEventOnDiskAsSoonAsWritten(@TempDir Path dir) throws Exception {
        Path runs = dir.resolve("runs");
        try (TensorBoardWriter writer = TensorBoardWriter.open(runs, 0)) {
            assertTrue(writer.file().getFileName().toString().matches(
                    "events\\.out\\.tfevents\\.\\d{10}\\.[A-Za-z0-9._-]+\\." + ProcessHandle.current().pid()
                            + "\\.\\d+"), writer.file().toString());
            writer.text("recipe", 0, "train:\n  lr: 0.001\n");
            for (int step = 1; step <= 3; step++) {
                writer.scalar("loss", step, 10.0 / step);
                writer.scalar("rewards/accuracies", step, 0.1 * step);
            }
            // Not closed yet: a run killed now keeps all of it.
            List<EventFileReader.Event> events = EventFileReader.read(writer.file());
            assertEquals(2 + 1 + 6, events.size());
            assertEquals("brain.Event:2", events.get(0).fileVersion());
            assertEquals(1, events.get(1).sessionStatus(), "SessionLog START");
            assertEquals(0, events.get(1).step());
            EventFileReader.Event text = events.get(2);
            assertEquals("recipe", text.tag());
            assertEquals("text", text.pluginName());
            assertEquals(7, text.dtype(), "DT_STRING");
            assertEquals("train:\n  lr: 0.001\n", text.text());
            for (int step = 1; step <= 3; step++) {
                EventFileReader.Event loss = events.get(1 + 2 * step);
                assertEquals("loss", loss.tag());
                assertEquals(step, loss.step());
                assertEquals((float) (10.0 / step), loss.simpleValue());
                assertEquals((float) (0.1 * step), events.get(2 + 2 * step).simpleValue());
                assertEquals("rewards/accuracies", events.get(2 + 2 * step).tag());
                double now = System.currentTimeMillis() / 1000.0;
                assertTrue(loss.wallTime() > now - 60 && loss.wallTime() <= now, "wall time in seconds");
            }
        }
    }

    @Test
    void everyNumericFieldOfARecordButStepIsAScalarOfTheSameName(@TempDir Path dir) throws Exception {
        Recipe recipe = recipe(dir);
        ObjectNode record = new ObjectMapper().createObjectNode();
        record.put("step", 7);
        record.put("stage", 2);
        record.put("loss", 0.6931471805599453);
        record.put("lr", 1.0e-4);
        record.put("skipped", true);
        record.put("loss_scale", 65536.0);
        record.put("memory_mb", 1234L);
        record.put("note", "text is left out");
        record.putNull("nothing");
        ObjectNode eval = new ObjectMapper().createObjectNode();
        eval.put("step", 7);
        eval.put("stage", 2);
        eval.put("eval_loss", 0.5);
        try (MetricsSink sink = MetricsSink.forRecipe(recipe, dir, -1)) {
            sink.write(record);
            sink.write(eval); // a DPO eval record: its stage repeats the train record's, written once
        }
        List<Path> files = TensorBoardWriter.eventFiles(dir.resolve("runs"));
        assertEquals(1, files.size());
        List<EventFileReader.Event> events = EventFileReader.read(files.get(0));
        EventFileReader.Event text = events.get(2);
        assertEquals(TensorBoardMetrics.RECIPE_TAG, text.tag());
        assertEquals("```yaml\n" + RecipeReader.toYaml(recipe) + "```\n", text.text());
        List<EventFileReader.Event> scalars = events.subList(3, events.size());
        assertEquals(List.of("stage", "loss", "lr", "skipped", "loss_scale", "memory_mb", "eval_loss"),
                scalars.stream().map(EventFileReader.Event::tag).toList());
        assertEquals(List.of(2f, 0.6931472f, 1.0e-4f, 1f, 65536f, 1234f, 0.5f),
                scalars.stream().map(EventFileReader.Event::simpleValue).toList());
        scalars.forEach(event -> assertEquals(7, event.step()));
    }

    /**
     * The best checkpoint's record at a stage's end (train.metric_for_best_model ...) reaches TensorBoard as every
     * other metrics.jsonl record does: its numbers and the stop as scalars, the checkpoint's folder (text) left out.
     */
    @Test
    void theStageKeptRecordIsScalarsAsInMetricsJsonl(@TempDir Path dir) throws Exception {
        Map<String, Object> kept = new LinkedHashMap<>();
        kept.put("step", 6L);
        kept.put("best_metric", 1.5);
        kept.put("best_global_step", 2L);
        kept.put("best_model_checkpoint", "checkpoints/step-000002");
        kept.put("should_training_stop", true);
        kept.put("adapter_from_step", 2L);
        try (TrackingListener tracking = new TrackingListener(recipe(dir))) {
            tracking.onRunStarted(new TrainingListener.RunStarted(dir, 0, 10, null));
            tracking.onStageKept(new TrainingListener.StageKept(6, kept));
        }
        List<EventFileReader.Event> events = EventFileReader.read(TensorBoardWriter.eventFiles(dir.resolve("runs"))
                .get(0));
        List<EventFileReader.Event> scalars = events.subList(3, events.size());
        assertEquals(List.of("best_metric", "best_global_step", "should_training_stop", "adapter_from_step"),
                scalars.stream().map(EventFileReader.Event::tag).toList());
        assertEquals(List.of(1.5f, 2f, 1f, 2f), scalars.stream().map(EventFileReader.Event::simpleValue).toList());
        scalars.forEach(event -> assertEquals(6, event.step()));
    }

    @Test
    void aResumedRunWritesANewFileThatStartsAfterTheCheckpointAndOmitsTheRecipe(@TempDir Path dir) throws Exception {
        Recipe recipe = recipe(dir);
        try (MetricsSink first = MetricsSink.forRecipe(recipe, dir, -1)) {
            first.write(record(1, 5.0));
        }
        try (MetricsSink resumed = MetricsSink.forRecipe(recipe, dir, 4)) {
            resumed.write(record(5, 3.0));
        }
        List<Path> files = TensorBoardWriter.eventFiles(dir.resolve("runs"));
        assertEquals(2, files.size());
        assertTrue(files.get(0).getFileName().toString().compareTo(files.get(1).getFileName().toString()) < 0);
        List<EventFileReader.Event> resumedEvents = EventFileReader.read(files.get(1));
        assertEquals(1, resumedEvents.get(1).sessionStatus());
        assertEquals(5, resumedEvents.get(1).step(), "START at the first step after the checkpoint's");
        assertEquals(3, resumedEvents.size(), "no second recipe text");
        assertEquals(3.0f, resumedEvents.get(2).simpleValue());
        assertNull(resumedEvents.get(2).text());
    }

    @Test
    void loggingIsOffByDefault(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("r.yaml");
        Files.writeString(file, "model:\n  preset: tiny-mixtral\ndata:\n  files: [" + CHATS + "]\noutput_dir: " + dir
                + "\n");
        Recipe recipe = RecipeReader.read(file, List.of()).recipe();
        assertEquals(false, recipe.logging().tensorboard());
        assertEquals(MetricsSink.NONE, MetricsSink.forRecipe(recipe, dir, -1));
    }

    private static ObjectNode record(long step, double loss) {
        ObjectNode record = new ObjectMapper().createObjectNode();
        record.put("step", step);
        record.put("loss", loss);
        return record;
    }

    private static Recipe recipe(Path dir) throws Exception {
        Path file = dir.resolve("r.yaml");
        Files.writeString(file, "model:\n  preset: tiny-mixtral\ndata:\n  files: [" + CHATS + "]\nlogging:\n"
                + "  tensorboard: true\noutput_dir: " + dir + "\n");
        return RecipeReader.read(file, List.of()).recipe();
    }
}
