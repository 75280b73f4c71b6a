package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.run.TrainingData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model folder with named templates (additional_chat_templates/NAME.jinja, transformers 5.18's layout) across the
 * commands: generate --chat without a default template refuses as transformers' apply_chat_template does (as training
 * with data.template auto or hf does), eval --template takes hf:NAME as data.template does, and a run trained with
 * data.template hf:chatml tokenizes its chats as transformers renders them with that template
 * (golden/hf-templates/named.json, interop/make_named_template_goldens.py), training their assistant tokens.
 */
class NamedTemplateCommandsTest {
    @TempDir
    Path dir;

    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode golden() throws Exception {
        return JSON.readTree(Path.of("../data-pipeline/src/test/resources/golden/hf-templates/named.json").toFile());
    }

    /** tiny-mistral with named.json's folder: chatml and zephyr named, the default only {@code withDefault}. */
    private Path model(boolean withDefault) throws Exception {
        Path model = dir.resolve(withDefault ? "named" : "no-default");
        CachedPreset.ensure("tiny-mistral", model);
        Path named = Files.createDirectories(model.resolve("additional_chat_templates"));
        Files.copy(Path.of("../configs/chat-templates/openhermes-2.5-chatml.jinja"), named.resolve("chatml.jinja"));
        Files.copy(Path.of("../configs/chat-templates/zephyr-7b-beta.jinja"), named.resolve("zephyr.jinja"));
        Path config = model.resolve("tokenizer_config.json");
        ObjectNode tokenizerConfig = (ObjectNode) JSON.readTree(config.toFile());
        // a string the files' dict replaces in transformers (named.json's "tokenizer_config_string" case)
        tokenizerConfig.put("chat_template", "{{ 'the config string transformers drops' }}");
        JSON.writeValue(config.toFile(), tokenizerConfig);
        if (withDefault) {
            Files.copy(Path.of("../configs/chat-templates/mistral-7b-instruct-v0.3.jinja"),
                    model.resolve("chat_template.jinja"));
        }
        return model;
    }

    /** named.json's chatml conversations as a messages file, in its order. */
    private Path chats(JsonNode golden) throws Exception {
        StringBuilder lines = new StringBuilder();
        for (JsonNode row : golden.get("rows")) {
            if (row.get("template").asText().equals("chatml")) {
                lines.append(JSON.writeValueAsString(JSON.createObjectNode().set("messages", row.get("messages"))))
                        .append('\n');
            }
        }
        return Files.writeString(dir.resolve("chats.jsonl"), lines);
    }

    @Test
    void generateChatWithoutADefaultTemplateRefusesAsTransformers() throws Exception {
        String transformers = golden().get("no_default").get("tokenizer_config_string").asText();
        Path model = model(false);
        MixtuneCliTest.Result chat = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hi",
                "--chat", "--max-new-tokens", "1");
        assertEquals(2, chat.code(), chat.out() + chat.err());
        assertTrue(chat.err().contains("no chat_template.jinja, so no default template (transformers: \""
                + transformers + "\")"), chat.err());
        MixtuneCliTest.Result text = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hi",
                "--max-new-tokens", "1");
        assertEquals(0, text.code(), text.err()); // a text prompt needs no template
    }

    @Test
    void evalTakesANamedTemplateAsDataTemplateDoes() throws Exception {
        Path model = model(true);
        Path chats = chats(golden());
        MixtuneCliTest.Result named = MixtuneCliTest.run("eval", "--model", model.toString(), "--data",
                chats.toString(), "--template", "hf:chatml", "--max-seq-len", "128");
        assertEquals(0, named.code(), named.err());
        assertTrue(named.out().contains("template hf:chatml, max_seq_len 128"), named.out());
        MixtuneCliTest.Result unknown = MixtuneCliTest.run("eval", "--model", model.toString(), "--data",
                chats.toString(), "--template", "hf:chatm");
        assertEquals(2, unknown.code(), unknown.err());
        assertTrue(unknown.err().contains("hf:chatm: the model has no chat template named \"chatm\": its templates are "
                + "[chatml, default, zephyr]"), unknown.err());
        // no default template: refused as training refuses data.template auto, in eval's words (--template)
        MixtuneCliTest.Result noDefault = MixtuneCliTest.run("eval", "--model", model(false).toString(), "--data",
                chats.toString(), "--template", "auto");
        assertEquals(2, noDefault.code(), noDefault.err());
        assertTrue(noDefault.err().contains("no default template (transformers: \""), noDefault.err());
        assertTrue(noDefault.err().contains(": give --template hf:NAME"), noDefault.err());
    }

    @Test
    void aRunTrainedWithANamedTemplateTrainsItsAssistantTokensAsTransformersRendersThem() throws Exception {
        JsonNode golden = golden();
        Path model = model(true);
        Path chats = chats(golden);
        Path recipe = Files.writeString(dir.resolve("recipe.yaml"), """
                model:
                  path: %s
                lora:
                  r: 4
                  alpha: 8
                  targets: [q_proj, v_proj]
                data:
                  files: [%s]
                  template: hf:chatml
                  max_seq_len: 512
                train:
                  max_steps: 2
                output_dir: %s
                """.formatted(model, chats, dir.resolve("out")));
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(0, run.code(), run.err());

        // the samples the run trained on, read back from its data cache
        Recipe read = RecipeReader.read(recipe, List.of()).recipe();
        SampleCache.Loaded loaded = TrainingData.load(read, TrainingData.cacheDir(read));
        assertEquals(SampleCache.Status.HIT, loaded.status());
        List<TokenizedSample> samples = loaded.dataset().train();
        List<JsonNode> rows = new ArrayList<>();
        golden.get("rows").forEach(row -> {
            if (row.get("template").asText().equals("chatml")) {
                rows.add(row);
            }
        });
        assertEquals(rows.size(), samples.size());
        try (TextTokenizer tokenizer = TrainingData.tokenizer(read).open()) {
            for (int i = 0; i < rows.size(); i++) {
                JsonNode row = rows.get(i);
                TokenizedSample sample = samples.get(i);
                String where = row.get("conversation").asText();
                long[] transformers = new long[row.get("input_ids").size()];
                for (int t = 0; t < transformers.length; t++) {
                    transformers[t] = row.get("input_ids").get(t).asLong();
                }
                assertArrayEquals(transformers, sample.inputIds(), where);
                StringBuilder trained = new StringBuilder();
                StringBuilder expected = new StringBuilder();
                List<Long> span = new ArrayList<>();
                for (int t = 0; t <= sample.length(); t++) {
                    boolean label = t < sample.length() && sample.labels()[t] != TokenizedSample.IGNORE;
                    if (label) {
                        assertEquals(sample.inputIds()[t], sample.labels()[t], where);
                        span.add(sample.inputIds()[t]);
                    } else if (!span.isEmpty()) {
                        trained.append(tokenizer.decode(span.stream().mapToLong(Long::longValue).toArray()))
                                .append('|');
                        span.clear();
                    }
                }
                for (JsonNode message : row.get("messages")) {
                    if (message.get("role").asText().equals("assistant")) {
                        // the answer and its <|im_end|>; the separator after it does not train (HfChatTemplate)
                        expected.append(message.get("content").asText()).append("<|im_end|>|");
                    }
                }
                assertEquals(expected.toString(), trained.toString(), where);
            }
        }
    }
}
