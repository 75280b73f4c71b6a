package io.mixtune.model.safetensors;

import static io.mixtune.model.safetensors.HandBuiltSafetensors.littleEndianFloats;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** One malformed checkpoint per check the reader makes; each message must name the file, the tensor and the problem. */
class SafetensorsReaderValidationTest {
    @TempDir
    Path dir;

    private static CheckpointException refused(Path path, String... mustMention) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> SafetensorsReader.open(path).close());
        for (String text : mustMention) {
            assertTrue(e.getMessage().contains(text), () -> "message lacks '" + text + "': " + e.getMessage());
        }
        return e;
    }

    private static String entry(String name, String dtype, String shape, long begin, long end) {
        return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + begin + "," + end + "]}";
    }

    private Path file(String name, String headerJson, byte[] data) throws IOException {
        return HandBuiltSafetensors.write(dir.resolve(name), headerJson, data);
    }

    @Test
    void aHandBuiltValidFileOpens() throws IOException {
        Path file = file("ok.safetensors", "{" + entry("w", "F32", "[2]", 0, 8)
                + ",\"__metadata__\":{\"format\":\"pt\",\"source\":\"hand\"}}", littleEndianFloats(1.5f, -3f));
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertEquals(-3f, reader.readFloats("w")[1]);
            assertEquals("hand", reader.metadata().get("source"));
        }
    }

    @Test
    void fileShorterThanTheLengthPrefix() throws IOException {
        Path file = Files.write(dir.resolve("short.safetensors"), new byte[] {1, 2, 3});
        CheckpointException e = refused(file, file.toString(), "truncated", "8-byte header length", "3 bytes");
        assertEquals(file, e.file());
        assertEquals(Optional.empty(), e.tensor());
    }

    @Test
    void headerLengthPastTheEndOfTheFile() throws IOException {
        Path file = HandBuiltSafetensors.write(dir.resolve("long.safetensors"), 1000, "{}".getBytes(StandardCharsets.UTF_8),
                new byte[0]);
        refused(file, file.toString(), "header length 1000", "past the end of the file", "expected at most 2");
    }

    @Test
    void headerLengthWithTheHighBitSetIsNotNegativeNonsense() throws IOException {
        Path file = HandBuiltSafetensors.write(dir.resolve("huge.safetensors"), -1L, new byte[4], new byte[0]);
        refused(file, file.toString(), "header length 18446744073709551615", "past the end of the file");
    }

    @Test
    void headerThatIsNotJson() throws IOException {
        Path file = file("garbage.safetensors", "{\"w\": {dtype: F32", new byte[0]);
        refused(file, file.toString(), "header is not valid JSON", "line 1");
    }

    @Test
    void headerThatIsJsonButNotAnObject() throws IOException {
        Path file = file("array.safetensors", "[1, 2, 3]", new byte[0]);
        refused(file, file.toString(), "header is not a JSON object", "ARRAY");
    }

    @Test
    void headerWithTrailingGarbageAfterTheObject() throws IOException {
        Path file = file("trailing.safetensors", "{} {}", new byte[0]);
        refused(file, file.toString(), "header is not valid JSON");
    }

    @Test
    void headerWithTheSameTensorTwice() throws IOException {
        Path file = file("dup.safetensors", "{" + entry("w", "F32", "[1]", 0, 4) + "," + entry("w", "F32", "[1]", 4, 8) + "}",
                new byte[8]);
        refused(file, file.toString(), "header is not valid JSON", "Duplicate field 'w'");
    }

    @Test
    void entryMissingDtype() throws IOException {
        Path file = file("nodtype.safetensors", "{\"layers.0.wq\":{\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[4]);
        CheckpointException e = refused(file, file.toString(), "'layers.0.wq'", "\"dtype\" as a string", "key missing");
        assertEquals(Optional.of("layers.0.wq"), e.tensor());
    }

    @Test
    void entryMissingShape() throws IOException {
        Path file = file("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", new byte[4]);
        refused(file, file.toString(), "'w'", "\"shape\" as an array of non-negative integers", "key missing");
    }

    @Test
    void entryMissingDataOffsets() throws IOException {
        Path file = file("nooffsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", new byte[4]);
        refused(file, file.toString(), "'w'", "\"data_offsets\" as an array of 2 non-negative integers", "key missing");
    }

    @Test
    void entryWithWrongTypes() throws IOException {
        Path dtypeNumber = file("t1.safetensors", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[4]);
        refused(dtypeNumber, dtypeNumber.toString(), "'w'", "\"dtype\" as a string", "NUMBER");
        Path shapeString = file("t2.safetensors", "{" + entry("w", "F32", "\"[1]\"", 0, 4) + "}", new byte[4]);
        refused(shapeString, shapeString.toString(), "'w'", "\"shape\"", "STRING");
        Path negativeDim = file("t3.safetensors", "{" + entry("w", "F32", "[-1]", 0, 4) + "}", new byte[4]);
        refused(negativeDim, negativeDim.toString(), "'w'", "non-negative integers", "[-1]");
        Path fractionalDim = file("t4.safetensors", "{" + entry("w", "F32", "[1.5]", 0, 4) + "}", new byte[4]);
        refused(fractionalDim, fractionalDim.toString(), "'w'", "non-negative integers", "[1.5]");
        Path threeOffsets = file("t5.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
                new byte[8]);
        refused(threeOffsets, threeOffsets.toString(), "'w'", "array of 2 non-negative integers", "[0,4,8]");
        Path entryNotObject = file("t6.safetensors", "{\"w\":[1,2]}", new byte[0]);
        refused(entryNotObject, entryNotObject.toString(), "'w'", "must be a JSON object", "ARRAY");
        Path metadataNotStrings = file("t7.safetensors", "{\"__metadata__\":{\"step\":3}}", new byte[0]);
        refused(metadataNotStrings, metadataNotStrings.toString(), "__metadata__", "'step'", "must be a string");
    }

    @Test
    void unknownDtype() throws IOException {
        Path file = file("dtype.safetensors", "{" + entry("w", "Q4_K", "[2]", 0, 1) + "}", new byte[1]);
        refused(file, file.toString(), "'w'", "unknown dtype \"Q4_K\"", "expected one of", "BF16");
    }

    @Test
    void dataOffsetsPastTheDataBuffer() throws IOException {
        Path file = file("short-data.safetensors", "{" + entry("w", "F32", "[4]", 0, 16) + "}", new byte[12]);
        refused(file, file.toString(), "'w'", "data_offsets [0, 16]", "past the end of the data buffer",
                "expected end <= 12");
    }

    @Test
    void dataOffsetsBeginAfterEnd() throws IOException {
        Path file = file("backwards.safetensors", "{" + entry("w", "F32", "[1]", 8, 4) + "}", new byte[8]);
        refused(file, file.toString(), "'w'", "data_offsets [8, 4]", "begin after end");
    }

    @Test
    void byteSpanDisagreesWithShapeAndDtype() throws IOException {
        Path file = file("span.safetensors", "{" + entry("w", "BF16", "[2,3]", 0, 8) + "}", new byte[8]);
        refused(file, file.toString(), "'w'", "span 8 bytes", "shape [2, 3] of BF16 needs 12 bytes");
    }

    @Test
    void shapeTooLargeToAddressIsReportedNotOverflowed() throws IOException {
        Path file = file("overflow.safetensors", "{" + entry("w", "F32", "[4294967296,4294967296]", 0, 0) + "}",
                new byte[0]);
        refused(file, file.toString(), "'w'", "too large");
    }

    @Test
    void overlappingTensors() throws IOException {
        Path file = file("overlap.safetensors",
                "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", new byte[12]);
        refused(file, file.toString(), "'b'", "data_offsets [4, 12] overlap those of tensor 'a', [0, 8]", "disjoint");
    }

    @Test
    void indexNamesAShardThatIsMissing() throws IOException {
        SafetensorsWriter.writeFile(dir.resolve("model-00001-of-00002.safetensors"),
                List.of(new TensorSpec("a", DType.F32, new long[] {1})), spec -> new float[1]);
        Path index = Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"metadata\":{\"total_size\":8},"
                + "\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}}");
        refused(dir, index.toString(), "'b'", "model-00002-of-00002.safetensors", "does not exist");
    }

    @Test
    void indexNamesATensorItsShardLacks() throws IOException {
        Path shard = dir.resolve("model-00001-of-00001.safetensors");
        SafetensorsWriter.writeFile(shard, List.of(new TensorSpec("a", DType.F32, new long[] {1})), spec -> new float[1]);
        Path index = Files.writeString(dir.resolve("model.safetensors.index.json"),
                "{\"weight_map\":{\"a\":\"model-00001-of-00001.safetensors\",\"lm_head.weight\":\"model-00001-of-00001.safetensors\"}}");
        refused(dir, shard.toString(), "'lm_head.weight'", index.toString(), "header does not contain it");
    }

    @Test
    void indexPointsAtTheWrongShard() throws IOException {
        Path first = dir.resolve("model-00001-of-00002.safetensors");
        Path second = dir.resolve("model-00002-of-00002.safetensors");
        SafetensorsWriter.writeFile(first, List.of(new TensorSpec("a", DType.F32, new long[] {1})), spec -> new float[1]);
        SafetensorsWriter.writeFile(second, List.of(new TensorSpec("b", DType.F32, new long[] {1})), spec -> new float[1]);
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"weight_map\":{"
                + "\"a\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}}");
        // Only shard 2 is opened, so 'a' is simply absent from it.
        refused(dir, second.toString(), "'a'", "header does not contain it");
    }

    @Test
    void indexWithoutWeightMapOrWithAPathOutsideTheDirectory() throws IOException {
        Path index = Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"metadata\":{}}");
        refused(dir, index.toString(), "\"weight_map\"");
        Files.writeString(index, "{\"weight_map\":{\"a\":\"../elsewhere.safetensors\"}}");
        refused(dir, index.toString(), "'a'", "../elsewhere.safetensors", "inside");
        Files.writeString(index, "{\"weight_map\": ");
        refused(dir, index.toString(), "not valid JSON");
    }

    @Test
    void sameTensorInTwoShards() throws IOException {
        Path first = dir.resolve("a.safetensors");
        Path second = dir.resolve("b.safetensors");
        SafetensorsWriter.writeFile(first, List.of(new TensorSpec("wq", DType.F32, new long[] {1})), spec -> new float[1]);
        SafetensorsWriter.writeFile(second, List.of(new TensorSpec("wq", DType.F32, new long[] {1})), spec -> new float[1]);
        refused(dir, second.toString(), first.toString(), "'wq'", "also stored in", "exactly one shard");
    }

    @Test
    void shardsWithoutTheirIndexAndOneMissing() throws IOException {
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("a", DType.F32, new long[] {1}),
                new TensorSpec("b", DType.F32, new long[] {1}), new TensorSpec("c", DType.F32, new long[] {1})),
                4, spec -> new float[1]);
        Files.delete(dir.resolve("model.safetensors.index.json"));
        Files.delete(dir.resolve("model-00002-of-00003.safetensors"));
        refused(dir, dir.toString(), "incomplete sharded checkpoint", "[2]", "missing");
    }

    @Test
    void pickleCheckpointsAreRefusedWithoutBeingRead() throws IOException {
        // Contents a pickle loader would execute; the reader must not even look.
        byte[] pickle = {(byte) 0x80, 0x02, 'c', 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm', '\n'};
        Path bin = Files.write(dir.resolve("pytorch_model.bin"), pickle);
        Files.write(dir.resolve("training_args.pt"), pickle);
        refused(dir, dir.toString(), "pytorch_model.bin", "training_args.pt", "arbitrary code",
                "save_pretrained", "safe_serialization=True");
        refused(bin, bin.toString(), "arbitrary code", "safe_serialization=True");
        Path ckpt = Files.write(dir.resolve("consolidated.00.PTH"), pickle);
        refused(ckpt, ckpt.toString(), "arbitrary code");
    }

    @Test
    void aPickleUnderASafetensorsNameIsNamedAsSuch() throws IOException {
        Path disguised = Files.write(dir.resolve("model.safetensors"), new byte[] {'P', 'K', 3, 4, 0, 0, 0, 0, 1, 2});
        refused(disguised, disguised.toString(), "past the end of the file", "PyTorch zip", "arbitrary code");
    }

    @Test
    void missingPathsAndEmptyDirectories() {
        Path nowhere = dir.resolve("nope.safetensors");
        refused(nowhere, nowhere.toString(), "no such file or directory");
        refused(dir, dir.toString(), "no checkpoint found", "model.safetensors");
    }

    @Test
    void askingForATensorThatIsNotThere() throws IOException {
        Path file = file("one.safetensors", "{" + entry("w", "F32", "[1]", 0, 4) + "}", new byte[4]);
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> reader.info("model.norm.weight"));
            assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("'model.norm.weight'")
                    && e.getMessage().contains("no such tensor"), e.getMessage());
            assertThrows(CheckpointException.class, () -> reader.readFloats("model.norm.weight"));
            assertThrows(CheckpointException.class, () -> reader.bytes("model.norm.weight"));
        }
    }

    @Test
    void aFileTruncatedAfterOpeningIsReportedInsteadOfFaulting() throws IOException {
        Path file = file("shrinks.safetensors", "{" + entry("w", "F32", "[1024]", 0, 4096) + "}", new byte[4096]);
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            try (var raf = new java.io.RandomAccessFile(file.toFile(), "rw")) {
                raf.setLength(100);
            }
            refusedOnRead(reader, file);
        }
    }

    @Test
    void mistralsNativeConsolidatedFileAloneIsRefusedNamingWhatToDownload() throws IOException {
        Path model = Files.createDirectories(dir.resolve("native"));
        file("native/consolidated.safetensors", "{" + entry("layers.0.attention.wq.weight", "F32", "[2]", 0, 8) + "}",
                littleEndianFloats(1f, 2f));
        refused(model, model.toString(), "consolidated.safetensors", "Mistral's own format",
                "model.safetensors.index.json", "convert_mistral_weights_to_hf.py");
    }

    @Test
    void consolidatedFileBesideHubShardsIsNotReadAsPartOfThem() throws IOException {
        Path model = Files.createDirectories(dir.resolve("both"));
        file("both/consolidated.safetensors", "{" + entry("layers.0.attention.wq.weight", "F32", "[2]", 0, 8) + "}",
                littleEndianFloats(1f, 2f));
        file("both/model-00001-of-00001.safetensors", "{" + entry("model.norm.weight", "F32", "[2]", 0, 8) + "}",
                littleEndianFloats(3f, 4f));
        try (SafetensorsReader reader = SafetensorsReader.open(model)) {
            assertEquals(java.util.Set.of("model.norm.weight"), reader.names());
        }
    }

    private static void refusedOnRead(SafetensorsReader reader, Path file) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> reader.readFloats("w"));
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("'w'")
                && e.getMessage().contains("shrank"), e.getMessage());
    }
}
