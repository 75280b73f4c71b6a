package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.gguf.GgufReader;
import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.PresetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * `mixtune export-gguf` with llama-quantize's --imatrix (GGUF and legacy .dat files, entries missing, per-expert
 * counts, an expert with count 0), --tensor-type and --tensor-type-file, and the q2_k_s, iq4_nl and iq4_xs types,
 * writes what llama.cpp's llama-quantize makes of `export-gguf --type f32` with the same options, byte for byte: the
 * whole file, every tensor's type and bytes, the metadata keys' order and the quantize.imatrix.* values
 * (golden/gguf/llama-quantize-imatrix.json and the imatrix files beside it, interop/make_gguf_imatrix_goldens.py,
 * which ran llama-quantize in trainer/ with the same relative paths, since it writes the path as given). What
 * llama-quantize refuses (a q2_k_s tensor the imatrix lacks, q2_k_s without one, an imatrix of another model) is
 * refused, exit 2, nothing written.
 */
class ExportGgufImatrixTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/gguf/llama-quantize-imatrix.json");

    @TempDir
    static Path models;

    static Stream<Integer> cases() throws Exception {
        return IntStream.range(0, golden().path("cases").size()).boxed();
    }

    static Stream<Integer> refusals() throws Exception {
        return IntStream.range(0, golden().path("refused").size()).boxed();
    }

    private static JsonNode golden() throws Exception {
        return new ObjectMapper().readTree(Files.readString(GOLDEN));
    }

    /** One checkpoint per preset for all cases: the exports only read it. */
    private static synchronized Path model(String preset) throws Exception {
        Path model = models.resolve(preset);
        if (!Files.isDirectory(model)) {
            JsonNode wide = golden().path("checkpoints").path(preset);
            if (!wide.isMissingNode()) {
                ExportGgufKQuantTest.writeWide(wide, model);
            } else {
                PresetCheckpoint.write(preset, model, 0, DType.F32);
            }
        }
        return model;
    }

    /** export-gguf of the case's preset to out, with its type and options. */
    private static MixtuneCliTest.Result export(JsonNode entry, Path out) throws Exception {
        List<String> args = new ArrayList<>(List.of("export-gguf", "--model",
                model(entry.path("preset").asText()).toString(), "--out", out.toString(), "--type",
                entry.path("type").asText()));
        entry.path("options").forEach(option -> args.add(option.asText()));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @ParameterizedTest
    @MethodSource("cases")
    void writesWhatLlamaQuantizeWritesWithTheSameOptions(int index, @TempDir Path dir) throws Exception {
        JsonNode entry = golden().path("cases").get(index);
        Path out = dir.resolve("case.gguf");
        MixtuneCliTest.Result result = export(entry, out);
        assertEquals(0, result.code(), entry.path("name").asText() + ": " + result.err());

        GgufReader reader = GgufReader.open(out);
        for (JsonNode expected : entry.path("metadata")) {
            assertEquals(expected.path("value").asText(), String.valueOf(reader.metadata()
                    .get(expected.path("key").asText()).value()), expected.path("key").asText());
        }
        ExportGgufKQuantTest.assertSameFile(entry, out);
    }

    @ParameterizedTest
    @MethodSource("refusals")
    void refusesWhatLlamaQuantizeRefuses(int index, @TempDir Path dir) throws Exception {
        JsonNode entry = golden().path("refused").get(index);
        Path out = dir.resolve("refused.gguf");
        MixtuneCliTest.Result result = export(entry, out);
        assertEquals(2, result.code(), result.err());
        // llama-quantize's reason, in its words, and the tensor it names
        String reason = entry.path("llama_quantize_error").asText().replaceFirst(".*failed to quantize: ", "");
        String said = reason.contains("Missing importance matrix") ? reason.replaceFirst(".* for tensor (\\S+).*", "$1")
                : reason.contains("requires an imatrix") ? "this quantization requires an imatrix!"
                : reason.replaceFirst(".* for (\\S+)$", "$1");
        assertTrue(result.err().contains(said), reason + " / " + result.err());
        assertFalse(Files.exists(out));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(0, left.count());
        }
    }

    /**
     * What export-gguf refuses before reading the model: --tensor-type entries llama-quantize's parse_tensor_type
     * refuses, ggml types mixtune does not encode, imatrix files llama-quantize fails to load, options of
     * llama-quantize export-gguf does not take, and a --threads count out of bounds; exit 2, nothing written.
     */
    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "q4_k_m --tensor-type attn_v | --tensor-type attn_v is malformed; expected NAME=TYPE",
        "q4_k_m --tensor-type =q8_0 | names no tensor",
        "q4_k_m --tensor-type attn_v= | names no type",
        "q4_k_m --tensor-type attn_v=iq2_xs | --tensor-type attn_v=iq2_xs is not a ggml type mixtune encodes",
        "q4_k_m --tensor-type ffn_(up=q8_0 | is not a regular expression",
        "q4_k_m --tensor-type-file missing.txt | --tensor-type-file missing.txt cannot be read",
        "q4_k_m --imatrix src/test/resources/golden/gguf/imatrix/tensor-types.txt | is neither a GGUF imatrix nor",
        "q4_k_m --imatrix missing.dat | --imatrix missing.dat does not exist",
        "q8_0 --imatrix src/test/resources/golden/gguf/imatrix/tiny-mistral.imatrix.gguf | --type q8_0 is"
                + " convert_hf_to_gguf.py's, which has neither",
        "iq2_xs | iq1/iq2/iq3 lattice grids",
        "q4_k_m --keep-split | --keep-split is llama-quantize's, which export-gguf does not take",
        "q4_k_m --prune-layers 1 | --prune-layers is llama-quantize's",
        "q4_k_m --override-kv a=int:1 | --override-kv is llama-quantize's",
        "q4_k_m --allow-requantize | --allow-requantize is llama-quantize's",
        "q4_k_m --threads 5000 | --threads 5000 is over 4096",
        "q4_k_m --threads -1 | --threads -1 is under 1"})
    void refusesOptionsByName(String typeAndOptions, String why, @TempDir Path dir) throws Exception {
        Path out = dir.resolve("model.gguf");
        List<String> args = new ArrayList<>(List.of("export-gguf", "--model", model("tiny-mistral").toString(),
                "--out", out.toString(), "--type"));
        args.addAll(List.of(typeAndOptions.split(" ")));
        MixtuneCliTest.Result result = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains(why), result.err());
        assertFalse(Files.exists(out));
    }
}
