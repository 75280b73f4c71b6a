package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * axolotl's own example configs (configs/axolotl/, copied from its repository) imported as recipes: the mapped values
 * equal axolotl's, every other key is listed with its line, and the recipe reads back with mixtune's reader, whose only
 * complaints are the Hub ids given as model and data paths.
 */
class AxolotlImportTest {
    private static final Path EXAMPLES = Path.of("../configs/axolotl");

    @TempDir
    Path dir;

    /** The recipe written to a file and read by RecipeReader: the problems it has, one per line. */
    private List<String> problems(AxolotlImport.Result imported) throws IOException {
        Path recipe = Files.writeString(dir.resolve("imported.yaml"), imported.recipe());
        try {
            RecipeReader.read(recipe, List.of());
            return List.of();
        } catch (RecipeException e) {
            return e.problems();
        }
    }

    @Test
    void mistralQloraMapsToTheSameSettings() throws IOException {
        AxolotlImport.Result imported = AxolotlImport.read(EXAMPLES.resolve("mistral-qlora.yml"));
        Map<String, Object> v = imported.values();
        assertEquals("mistralai/Mistral-7B-v0.1", v.get("model.path"));
        assertEquals("nf4", v.get("model.quantize"), "adapter: qlora, load_in_4bit: true");
        assertEquals(32, v.get("lora.r"));
        assertEquals(16.0, v.get("lora.alpha"));
        assertEquals(0.05, v.get("lora.dropout"));
        // lora_target_linear: every linear layer but lm_head; the listed modules are among them
        assertEquals(AxolotlImport.EVERY_LINEAR_BUT_LM_HEAD, v.get("lora.targets"));
        assertEquals(List.of("mhenrichsen/alpaca_2k_test"), v.get("data.files"));
        assertEquals("alpaca", v.get("data.format"));
        assertEquals(0.1, v.get("data.validation_ratio"));
        assertEquals(8192, v.get("data.max_seq_len"));
        assertEquals(true, v.get("data.packing"));
        assertEquals(2, v.get("train.micro_batch_size"));
        assertEquals(4, v.get("train.gradient_accumulation"));
        assertEquals(1, v.get("train.epochs"));
        assertEquals(2.0e-4, v.get("train.lr"));
        assertEquals("cosine", v.get("train.schedule"));
        assertEquals(true, v.get("train.gradient_checkpointing"));
        assertEquals(0.0, v.get("train.weight_decay"));
        assertEquals("./outputs/qlora-out", v.get("output_dir"));
        String unmapped = String.join("\n", imported.unmapped());
        for (String key : List.of("optimizer", "bf16", "warmup_ratio", "evals_per_epoch", "saves_per_epoch",
                "loss_watchdog_threshold", "attn_implementation", "model_type", "tokenizer_type")) {
            assertTrue(unmapped.contains(": " + key + ": "), key + " is listed as not mapped:\n" + unmapped);
        }
        assertTrue(unmapped.contains("mistral-qlora.yml:64: warmup_ratio: 0.1: mixtune counts warmup in steps"),
                unmapped);
        assertFalse(unmapped.contains("load_in_8bit") || unmapped.contains("wandb_project"),
                "load_in_8bit: false and keys without a value set nothing:\n" + unmapped);

        // Read back: only the Hub ids, which are not local paths, are refused, each named.
        List<String> problems = problems(imported);
        assertEquals(2, problems.size(), String.join("\n", problems));
        assertTrue(problems.get(0).contains("model.path") && problems.get(0).contains("mistralai/Mistral-7B-v0.1"),
                problems.get(0));
        assertTrue(problems.get(1).contains("data.files[0]") && problems.get(1).contains("mhenrichsen/alpaca_2k_test"),
                problems.get(1));
    }

    @Test
    void mixtralQloraMapsToTheSameSettingsRouterIncluded() throws IOException {
        AxolotlImport.Result imported = AxolotlImport.read(EXAMPLES.resolve("mixtral-qlora.yml"));
        Map<String, Object> v = imported.values();
        assertEquals("mistralai/Mixtral-8x7B-v0.1", v.get("model.path"));
        assertEquals("nf4", v.get("model.quantize"));
        assertEquals(List.of("down_proj", "gate", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj", "w1",
                "w2", "w3"), v.get("lora.targets"), "axolotl's find_all_linear_names on a Mixtral: experts and router");
        assertEquals(4096, v.get("data.max_seq_len"));
        assertEquals(0.0, v.get("data.validation_ratio"));
        assertEquals(1, v.get("train.micro_batch_size"));
        assertEquals(2, v.get("train.gradient_accumulation"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains(": model_config: ") && unmapped.contains(": deepspeed: ")
                && unmapped.contains(": trust_remote_code: "), unmapped);
        List<String> problems = problems(imported);
        assertEquals(2, problems.size(), String.join("\n", problems));
        assertTrue(problems.get(0).contains("mistralai/Mixtral-8x7B-v0.1"), problems.get(0));
        assertTrue(problems.get(1).contains("tatsu-lab/alpaca"), problems.get(1));
    }

    @Test
    void dpoMapsTheMethodAndListsADatasetLayoutMixtuneDoesNotRead() throws IOException {
        AxolotlImport.Result imported = AxolotlImport.read(EXAMPLES.resolve("mistral-dpo-qlora.yml"));
        Map<String, Object> v = imported.values();
        assertEquals("dpo", v.get("train.method"));
        assertEquals("chatml", v.get("data.template"));
        assertEquals(8, v.get("lora.r"));
        assertEquals(0.2, v.get("lora.dropout"));
        assertEquals(1.0e-4, v.get("train.lr"));
        assertEquals(6, v.get("train.epochs"));
        assertFalse(v.containsKey("data.files"), "the dataset's fields are not mixtune's {prompt, chosen, rejected}");
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains(": datasets: ") && unmapped.contains("chat_template.default")
                && unmapped.contains("field_chosen"), unmapped);
        assertTrue(unmapped.contains(": lora_modules_to_save: ") && unmapped.contains(": special_tokens: "), unmapped);
        assertTrue(imported.recipe().contains("#   " + EXAMPLES.resolve("mistral-dpo-qlora.yml") + ":"),
                "the recipe's header lists them too:\n" + imported.recipe());
    }

    @Test
    void lorasWithoutFourBitsAreUnquantizedAndAGradientTypeIsNamed() throws IOException {
        Path config = Files.writeString(dir.resolve("lora.yml"), """
                base_model: /models/mistral
                adapter: lora
                lora_r: 8
                lora_alpha: 16
                lora_target_modules: [q_proj, v_proj]
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                chat_template: mistral_v1
                num_epochs: 1.5
                learning_rate: 2e-5
                lr_scheduler: one_cycle
                max_steps: 100
                warmup_steps: 10
                seed: 7
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        Map<String, Object> v = imported.values();
        assertEquals("none", v.get("model.quantize"));
        assertEquals(List.of("q_proj", "v_proj"), v.get("lora.targets"));
        assertEquals("messages", v.get("data.format"));
        assertEquals("mistral", v.get("data.template"));
        assertEquals(2.0e-5, v.get("train.lr"), "2e-5 is a string to YAML 1.1");
        assertEquals(100, v.get("train.max_steps"));
        assertEquals(10, v.get("train.warmup_steps"));
        assertEquals(7, v.get("train.seed"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains("lora.yml:10: num_epochs: 1.5: a fraction of an epoch"), unmapped);
        assertTrue(unmapped.contains("lora.yml:12: lr_scheduler: \"one_cycle\": mixtune's schedules are"), unmapped);
        assertEquals(2, imported.unmapped().size(), unmapped);
    }

    @Test
    void aConstantSchedulerIgnoresWarmupAsTransformersDoes() throws IOException {
        // transformers' get_scheduler("constant", ...) returns get_constant_schedule(optimizer): warmup_steps is
        // dropped, so axolotl trains at the full rate from step 1; constant_with_warmup keeps the warmup.
        Path constant = Files.writeString(dir.resolve("constant.yml"), """
                base_model: /models/mistral
                adapter: lora
                lr_scheduler: constant
                warmup_steps: 5
                """);
        AxolotlImport.Result imported = AxolotlImport.read(constant);
        assertEquals("constant", imported.values().get("train.schedule"));
        assertEquals(0, imported.values().get("train.warmup_steps"));
        assertTrue(imported.recipe().contains(
                "warmup_steps: 0   # axolotl: warmup_steps (5), which lr_scheduler: constant ignores"), imported.recipe());
        assertEquals(List.of(), imported.unmapped());

        Path withWarmup = Files.writeString(dir.resolve("warmup.yml"), """
                base_model: /models/mistral
                adapter: lora
                lr_scheduler: constant_with_warmup
                warmup_steps: 5
                """);
        assertEquals(5, AxolotlImport.read(withWarmup).values().get("train.warmup_steps"));
    }
}
