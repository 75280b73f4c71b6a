package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.read.ChatFormat;
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
        for (String key : List.of("bf16", "evals_per_epoch", "saves_per_epoch",
                "loss_watchdog_threshold", "attn_implementation", "model_type", "tokenizer_type")) {
            assertTrue(unmapped.contains(": " + key + ": "), key + " is listed as not mapped:\n" + unmapped);
        }
        // transformers' get_warmup_steps: ceil(0.1 x the steps mixtune train counts); axolotl floors it
        assertEquals(0.1, v.get("train.warmup_ratio"));
        assertFalse(unmapped.contains("warmup_ratio"), unmapped);
        // bitsandbytes' 8-bit AdamW, as transformers' Trainer builds it for the name: mixtune's AdamW8bit
        assertEquals("adamw_bnb_8bit", v.get("train.optimizer"));
        assertFalse(unmapped.contains("optimizer"), unmapped);
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
        // model_config: {output_router_logits: true} is what makes transformers add the load-balancing loss
        assertEquals(true, v.get("train.router_aux_loss"));
        String unmapped = String.join("\n", imported.unmapped());
        assertFalse(unmapped.contains(": model_config: "), unmapped);
        assertTrue(unmapped.contains(": deepspeed: ") && unmapped.contains(": trust_remote_code: "), unmapped);
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
        assertTrue(imported.recipe().contains("template: mistral   # axolotl: chat_template: mistral_v1,"
                + " near-equivalent (mistral-common's spacing"), imported.recipe());
        assertEquals(2.0e-5, v.get("train.lr"), "2e-5 is a string to YAML 1.1");
        assertEquals(100, v.get("train.max_steps"));
        assertEquals(10, v.get("train.warmup_steps"));
        assertEquals(7, v.get("train.seed"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains("lora.yml:10: num_epochs: 1.5: a fraction of an epoch"), unmapped);
        assertTrue(unmapped.contains("lora.yml:12: lr_scheduler: \"one_cycle\": axolotl's own torch OneCycleLR;"
                + " mixtune's schedules are transformers' constant, linear, cosine, cosine_with_restarts, polynomial,"
                + " inverse_sqrt, cosine_warmup_with_min_lr, warmup_stable_decay, constant_with_warmup and"
                + " cosine_with_min_lr"), unmapped);
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

    /**
     * transformers' AdamW names (adamw_torch, adamw_torch_fused, paged_adamw_32bit: torch.optim.AdamW's update) are
     * mixtune's optimizer; other optimizers are listed with what mixtune trains with instead. warmup_ratio beside
     * warmup_steps yields to it, as axolotl's does; quantize_moe_experts is what mixtune's NF4 does anyway.
     */
    @Test
    void adamwOptimizerNamesAreMixtunesOthersAreListed() throws IOException {
        for (String adamw : List.of("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")) {
            Path config = Files.writeString(dir.resolve(adamw + ".yml"), "base_model: /models/mixtral\nadapter: qlora\n"
                    + "load_in_4bit: true\nquantize_moe_experts: true\noptimizer: " + adamw + "\nwarmup_steps: 3\n"
                    + "warmup_ratio: 0.1\n");
            AxolotlImport.Result imported = AxolotlImport.read(config);
            assertEquals(List.of(config + ":7: warmup_ratio: 0.1: warmup_steps is set, which axolotl uses instead"),
                    imported.unmapped(), adamw);
            assertEquals(3, imported.values().get("train.warmup_steps"));
            assertTrue(imported.recipe().contains("quantize: nf4   # axolotl: adapter: qlora, load_in_4bit: true,"
                    + " quantize_moe_experts: true"), imported.recipe());
            assertEquals(List.of(), problemsBesidesPaths(imported));
        }
        for (String eightBit : List.of("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit")) {
            Path config = Files.writeString(dir.resolve(eightBit + ".yml"), "base_model: /models/mistral\n"
                    + "adapter: qlora\nload_in_4bit: true\noptimizer: " + eightBit + "\n");
            AxolotlImport.Result imported = AxolotlImport.read(config);
            assertEquals(List.of(), imported.unmapped(), eightBit);
            assertEquals(eightBit, imported.values().get("train.optimizer"));
            assertTrue(imported.recipe().contains("optimizer: " + eightBit + "   # axolotl: optimizer"),
                    imported.recipe());
            assertEquals(List.of(), problemsBesidesPaths(imported));
        }
        Path torchao = Files.writeString(dir.resolve("torchao.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "optimizer: adamw_torch_4bit\n");
        assertEquals(List.of(torchao + ":3: optimizer: \"adamw_torch_4bit\": torchao's AdamW with its moments in 4"
                + " bits is not offered: train.optimizer: adamw_bnb_8bit (bitsandbytes' 8-bit moments) or adamw_torch"
                + " (fp32); the recipe trains as adamw_torch would"), AxolotlImport.read(torchao).unmapped());
        Path lion = Files.writeString(dir.resolve("lion.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "optimizer: lion_32bit\nlr_scheduler: constant\nwarmup_ratio: 0.05\n");
        AxolotlImport.Result imported = AxolotlImport.read(lion);
        assertEquals(List.of(lion + ":3: optimizer: \"lion_32bit\": mixtune trains with AdamW only, as adamw_torch"
                + " or adamw_bnb_8bit (train.optimizer, adam_beta1, adam_beta2, adam_eps, weight_decay)"),
                imported.unmapped());
        assertTrue(imported.recipe().contains(
                "warmup_steps: 0   # axolotl: warmup_ratio (0.05), which lr_scheduler: constant ignores"),
                imported.recipe());
        assertEquals(List.of(), problemsBesidesPaths(imported));
    }

    /**
     * axolotl's loraplus_lr_ratio and loraplus_lr_embedding go to PEFT's create_loraplus_optimizer with lr, betas and
     * eps only: its loraplus_weight_decay stays 0, so axolotl's weight_decay does not apply, and the import says so.
     */
    @Test
    void loraPlusKeysCarryOverAndTheirWeightDecayIsPeftsZero() throws IOException {
        Path plus = Files.writeString(dir.resolve("plus.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "weight_decay: 0.01\nloraplus_lr_ratio: 16\nloraplus_lr_embedding: 1e-6\n");
        AxolotlImport.Result imported = AxolotlImport.read(plus);
        assertEquals(16.0, imported.values().get("train.loraplus_lr_ratio"));
        assertEquals(1.0e-6, imported.values().get("train.loraplus_lr_embedding"));
        assertEquals(0.0, imported.values().get("train.weight_decay"));
        assertTrue(imported.recipe().contains("weight_decay: 0.0   # axolotl: weight_decay (0.01), which axolotl does"
                + " not pass to create_loraplus_optimizer: its loraplus_weight_decay 0 applies"), imported.recipe());
        assertEquals(List.of(), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));
        Path plain = Files.writeString(dir.resolve("plain.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "weight_decay: 0.01\n");
        assertEquals(0.01, AxolotlImport.read(plain).values().get("train.weight_decay"));
    }

    /** axolotl's cosine_min_lr_ratio, (1 - ratio) x cosine + ratio, is train.min_lr_ratio; only with a cosine. */
    @Test
    void cosineMinLrRatioIsTheCosinesFloor() throws IOException {
        Path cosine = Files.writeString(dir.resolve("floor.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "cosine_min_lr_ratio: 0.1\n");
        AxolotlImport.Result imported = AxolotlImport.read(cosine);
        assertEquals(0.1, imported.values().get("train.min_lr_ratio"));
        assertEquals(List.of(), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));
        Path linear = Files.writeString(dir.resolve("linear.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "lr_scheduler: linear\ncosine_min_lr_ratio: 0.1\n");
        assertEquals(List.of(linear + ":4: cosine_min_lr_ratio: 0.1: axolotl reads it with lr_scheduler: cosine and no"
                + " cosine_constant_lr_ratio only; mixtune's train.min_lr_ratio is that floor"),
                AxolotlImport.read(linear).unmapped());
    }

    /**
     * axolotl hands lr_scheduler and lr_scheduler_kwargs to transformers' get_scheduler: its schedules are mixtune's of
     * the same name, each kwarg the schedule takes the train key of its name (min_lr_rate, and min_lr divided by
     * learning_rate, are min_lr_ratio); a kwarg the schedule does not take and the metric-driven schedules are listed.
     */
    @Test
    void transformersSchedulersAndTheirKwargsCarryOver() throws IOException {
        Path wsd = Files.writeString(dir.resolve("wsd.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "learning_rate: 2e-4\nlr_scheduler: warmup_stable_decay\nlr_scheduler_kwargs:\n  num_decay_steps: 20\n"
                + "  decay_type: 1-sqrt\n  min_lr_ratio: 0.1\n  power: 2\n");
        AxolotlImport.Result imported = AxolotlImport.read(wsd);
        assertEquals("warmup_stable_decay", imported.values().get("train.schedule"));
        assertEquals(20, imported.values().get("train.num_decay_steps"));
        assertEquals("1-sqrt", imported.values().get("train.decay_type"));
        assertEquals(0.1, imported.values().get("train.min_lr_ratio"));
        assertTrue(imported.recipe().contains("num_decay_steps: 20   # axolotl: lr_scheduler_kwargs.num_decay_steps"),
                imported.recipe());
        assertEquals(List.of(wsd + ":9: lr_scheduler_kwargs.power: 2: transformers' warmup_stable_decay takes"
                + " num_decay_steps, num_stable_steps, warmup_type, decay_type, min_lr_ratio, num_cycles (its run stops"
                + " with a TypeError)"), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path minLr = Files.writeString(dir.resolve("min-lr.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "learning_rate: 2e-4\nlr_scheduler: cosine_with_min_lr\nlr_scheduler_kwargs:\n  min_lr: 1e-5\n"
                + "  num_cycles: 0.75\n");
        imported = AxolotlImport.read(minLr);
        assertEquals("cosine", imported.values().get("train.schedule"));
        assertEquals(1.0e-5 / 2.0e-4, imported.values().get("train.min_lr_ratio"), "transformers' min_lr / lr");
        assertEquals(0.75, imported.values().get("train.num_cycles"));
        assertEquals(List.of(), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path polynomial = Files.writeString(dir.resolve("poly.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "lr_scheduler: polynomial\nlr_scheduler_kwargs: {power: 2.0, lr_end: 1e-7}\n");
        imported = AxolotlImport.read(polynomial);
        assertEquals(2.0, imported.values().get("train.power"));
        assertEquals(1.0e-7, imported.values().get("train.lr_end"));
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path plateau = Files.writeString(dir.resolve("plateau.yml"), "base_model: /models/mistral\nadapter: lora\n"
                + "lr_scheduler: reduce_lr_on_plateau\nlr_scheduler_kwargs: {patience: 3}\n");
        assertEquals(List.of(plateau + ":3: lr_scheduler: \"reduce_lr_on_plateau\": moves the rate on evaluation"
                + " metrics, and mixtune's rate is a function of the step alone (what a resumed run recomputes);"
                + " mixtune's schedules are transformers' constant, linear, cosine, cosine_with_restarts, polynomial,"
                + " inverse_sqrt, cosine_warmup_with_min_lr, warmup_stable_decay, constant_with_warmup and"
                + " cosine_with_min_lr", plateau + ":4: lr_scheduler_kwargs.patience: 3: lr_scheduler"
                + " reduce_lr_on_plateau is not mapped"), AxolotlImport.read(plateau).unmapped());
    }

    /** The problems of the imported recipe other than its model and data paths, which these tests do not create. */
    private List<String> problemsBesidesPaths(AxolotlImport.Result imported) throws IOException {
        return problems(imported).stream()
                .filter(problem -> !problem.contains("model.path") && !problem.contains("data.files")).toList();
    }

    @Test
    void whatTheConfigLeavesUnsetGetsAxolotlsDefaultsNotMixtunes() throws IOException {
        // axolotl: sequence_len 512, sample_packing off, lora_dropout 0.0, save_total_limit 4, no router loss unless
        // model_config.output_router_logits; mixtune's defaults are 2048, packing on, 0.05, 2 and the router loss on.
        Path config = Files.writeString(dir.resolve("bare.yml"), """
                base_model: /models/mixtral
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                micro_batch_size: 2
                learning_rate: 0.0002
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        Map<String, Object> v = imported.values();
        assertEquals(512, v.get("data.max_seq_len"));
        assertEquals(false, v.get("data.packing"));
        assertEquals(0.0, v.get("lora.dropout"));
        assertEquals(4, v.get("train.keep_last"));
        assertEquals(false, v.get("train.router_aux_loss"));
        String recipe = imported.recipe();
        for (String line : List.of("max_seq_len: 512   # axolotl: sequence_len unset (axolotl's default 512)",
                "packing: false   # axolotl: sample_packing unset (axolotl's default: off)",
                "dropout: 0.0   # axolotl: lora_dropout unset (axolotl's default 0.0)",
                "keep_last: 4   # axolotl: save_total_limit unset (axolotl passes 4)",
                "router_aux_loss: false   # axolotl: model_config.output_router_logits unset (transformers' default"
                        + " false: no router load-balancing loss)",
                "# Note: the config sets neither warmup_steps nor warmup_ratio: axolotl then warms up"
                        + " min(int(0.03 x total steps), 100) steps")) {
            assertTrue(recipe.contains(line), line + " in\n" + recipe);
        }
        assertEquals(List.of(), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        // transformers' constant schedule has no warmup at all: nothing to note then
        Path constant = Files.writeString(dir.resolve("constant.yml"), "base_model: /models/mixtral\nadapter: lora\n"
                + "lr_scheduler: constant\nmodel_config:\n  output_router_logits: true\n  router_aux_loss_coef: 0.1\n");
        AxolotlImport.Result constantImport = AxolotlImport.read(constant);
        assertFalse(constantImport.recipe().contains("warmup"), constantImport.recipe());
        assertEquals(true, constantImport.values().get("train.router_aux_loss"));
        assertEquals(0.1, constantImport.values().get("train.router_aux_loss_coef"));
        assertTrue(constantImport.recipe().contains("router_aux_loss_coef: 0.1   # axolotl: "
                + "model_config.router_aux_loss_coef: 0.1"), constantImport.recipe());
        assertEquals(List.of(), constantImport.unmapped());

        // without output_router_logits transformers weighs no router loss: the coefficient is dropped, said so
        Path off = Files.writeString(dir.resolve("off.yml"), "base_model: /models/mixtral\nadapter: lora\n"
                + "model_config:\n  router_aux_loss_coef: 0.1\n  rope_theta: 10000\n");
        AxolotlImport.Result offImport = AxolotlImport.read(off);
        assertEquals(false, offImport.values().get("train.router_aux_loss"));
        assertFalse(offImport.values().containsKey("train.router_aux_loss_coef"));
        String at = dir.resolve("off.yml") + ":3: model_config: {\"router_aux_loss_coef\":0.1,\"rope_theta\":10000}: ";
        assertEquals(List.of(at + "router_aux_loss_coef weighs the router load-balancing loss, which is off without "
                + "output_router_logits: true: dropped", at + "mixtune maps only output_router_logits "
                + "(train.router_aux_loss) and router_aux_loss_coef (train.router_aux_loss_coef) and reads the rest "
                + "from the model's config.json: not [rope_theta]"), offImport.unmapped());
    }

    @Test
    void axolotlsDefaultLossKeysAreMixtunesAssistantTurns() throws IOException {
        // roles_to_train [assistant] and train_on_eos turn are what chat_template datasets default to
        // (prompt_strategies/chat_template.py): every assistant turn with the EOS that closes it.
        Path config = Files.writeString(dir.resolve("roles.yml"), """
                base_model: /models/mistral
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                    roles_to_train: ["assistant"]
                    train_on_eos: turn
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        assertEquals(List.of("chats.jsonl"), imported.values().get("data.files"));
        assertEquals("messages", imported.values().get("data.format"));
        assertEquals("all_assistant_turns", imported.values().get("data.loss_on"));
        assertEquals(List.of(), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path other = Files.writeString(dir.resolve("other.yml"), """
                base_model: /models/mistral
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                    roles_to_train: ["user", "assistant"]
                    train_on_eos: all
                """);
        AxolotlImport.Result otherImport = AxolotlImport.read(other);
        assertFalse(otherImport.values().containsKey("data.files"));
        String unmapped = String.join("\n", otherImport.unmapped());
        assertTrue(unmapped.contains("chats.jsonl: roles_to_train [\"user\",\"assistant\"] (mixtune trains the"
                + " assistant's turns: roles_to_train [assistant])"), unmapped);
        assertTrue(unmapped.contains("chats.jsonl: train_on_eos \"all\" (mixtune trains the EOS that closes each"
                + " assistant turn: train_on_eos turn)"), unmapped);
    }

    @Test
    void axolotlsShareGptMigrationIsMixtunesShareGpt() throws IOException {
        // docs/dataset-formats/conversation.qmd: type sharegpt is refused now; its records are read this way, with
        // axolotl's default roles mapping human and gpt to user and assistant.
        Path config = Files.writeString(dir.resolve("sharegpt.yml"), """
                base_model: /models/mistral
                adapter: qlora
                datasets:
                  - path: conversations.jsonl
                    type: chat_template
                    field_messages: conversations
                    message_property_mappings:
                      role: from
                      content: value
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        assertEquals("sharegpt", imported.values().get("data.format"));
        assertEquals(List.of(), imported.unmapped());
        JsonNode record = new ObjectMapper().readTree(
                "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"},"
                        + " {\"from\": \"gpt\", \"value\": \"yo\"}]}");
        assertEquals(List.of(new Message(Role.USER, "hi"),
                new Message(Role.ASSISTANT, "yo")),
                ChatFormat.byKey("sharegpt").messages(record));
    }

    @Test
    void completionDatasetsAreTextRecordsAndTheChunkingIsNoted() throws IOException {
        // prompt_strategies/completion.py: the text is in ds_cfg's field (default "text"), every token trained, a text
        // longer than sequence_len cut into chunks of it; mixtune keeps the first max_seq_len tokens, as TRL does
        Path config = Files.writeString(dir.resolve("completion.yml"), """
                base_model: /models/mistral
                adapter: qlora
                sequence_len: 1024
                datasets:
                  - path: books.jsonl
                    type: completion
                    field: body
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        assertEquals("text", imported.values().get("data.format"));
        assertEquals("body", imported.values().get("data.dataset_text_field"));
        assertEquals(List.of(), imported.unmapped());
        assertTrue(imported.notes().stream().anyMatch(note -> note.contains("chunks of sequence_len")),
                imported.notes().toString());
        assertTrue(imported.recipe().contains("# Note: axolotl's completion type cuts a text longer than"),
                imported.recipe());
        JsonNode record = new ObjectMapper().readTree("{\"body\": \"Once upon a time.\"}");
        assertEquals(ChatFormat.TEXT, ChatFormat.detect(record, "body"));

        Path plain = Files.writeString(dir.resolve("plain.yml"), """
                base_model: /models/mistral
                datasets:
                  - path: books.jsonl
                    type: completion
                """);
        AxolotlImport.Result defaults = AxolotlImport.read(plain);
        assertEquals("text", defaults.values().get("data.format"));
        assertFalse(defaults.values().containsKey("data.dataset_text_field"), "axolotl's default field is text");
        assertFalse(defaults.values().containsKey("data.packing_strategy"), "unpacked: no strategy");
        assertTrue(defaults.notes().stream().anyMatch(note -> note.contains("data.packing_strategy bfd_split")),
                defaults.notes().toString());
    }

    /** Packed, axolotl's chunks of sequence_len are TRL's bfd_split pieces: the import packs so. */
    @Test
    void packedCompletionDatasetsSplitLongTextsAsBfdSplit() throws IOException {
        Path config = Files.writeString(dir.resolve("packed.yml"), """
                base_model: /models/mistral
                adapter: qlora
                sequence_len: 512
                sample_packing: true
                datasets:
                  - path: books.jsonl
                    type: completion
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        assertEquals("bfd_split", imported.values().get("data.packing_strategy"));
        assertEquals(true, imported.values().get("data.packing"));
        assertEquals(List.of(), imported.unmapped());
        assertTrue(imported.recipe().contains("packing_strategy: bfd_split   # axolotl: datasets[].type completion"),
                imported.recipe());
        // completion.py's load tokenizes with max_length sequence_len x 64: axolotl trains no token past it
        assertTrue(imported.notes().stream().anyMatch(note -> note.contains("64 x sequence_len")),
                imported.notes().toString());
    }

    @Test
    void inputOutputSegmentsAreListedWithWhatToWriteInstead() throws IOException {
        Path config = Files.writeString(dir.resolve("io.yml"), """
                base_model: /models/mistral
                datasets:
                  - path: segments.jsonl
                    type: input_output
                """);
        String unmapped = String.join("\n", AxolotlImport.read(config).unmapped());
        assertTrue(unmapped.contains("segments.jsonl of type 'input_output' (segments of text with label booleans")
                && unmapped.contains("data.format prompt_completion"), unmapped);
    }

    @Test
    void peftInitLoraWeightsIsMappedAsAxolotlHandsItToPeft() throws IOException {
        for (String[] c : new String[][] {{"pissa", "pissa"}, {"pissa_niter_4", "pissa_niter_4"}, {"olora", "olora"},
                {"gaussian", "gaussian"}, {"true", "true"}, {"false", null}}) {
            Path config = Files.writeString(dir.resolve("init.yml"), """
                    base_model: /models/mistral
                    adapter: qlora
                    peft_init_lora_weights: %s
                    """.formatted(c[0]));
            AxolotlImport.Result imported = AxolotlImport.read(config);
            Object value = imported.values().get("lora.init_lora_weights");
            assertEquals(c[1], value == null ? null : value.toString(), c[0]);
            assertTrue(imported.unmapped().stream().noneMatch(u -> u.contains("peft_init_lora_weights")),
                    imported.unmapped().toString());
        }
        Path eva = Files.writeString(dir.resolve("eva.yml"), """
                base_model: /models/mistral
                adapter: qlora
                peft_init_lora_weights: eva
                """);
        String unmapped = String.join("\n", AxolotlImport.read(eva).unmapped());
        assertTrue(unmapped.contains("peft_init_lora_weights: \"eva\": \"eva\" is not offered: EVA needs"), unmapped);
    }

    @Test
    void keysWithAMixtuneSettingAreMapped() throws IOException {
        Path sft = Files.writeString(dir.resolve("sft.yml"), """
                base_model: /models/mistral
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                chat_template: tokenizer_default
                train_on_inputs: true
                peft_use_rslora: true
                peft_use_dora: true
                eval_steps: 50
                save_steps: 100
                save_total_limit: 3
                use_tensorboard: true
                special_tokens:
                  eos_token: "<|im_end|>"
                """);
        AxolotlImport.Result imported = AxolotlImport.read(sft);
        Map<String, Object> v = imported.values();
        assertEquals("hf", v.get("data.template"), "tokenizer_default: the tokenizer's own template");
        assertEquals("train_on_inputs", v.get("data.loss_on"));
        assertEquals(true, v.get("lora.rslora"));
        assertEquals(true, v.get("lora.use_dora"));
        assertEquals(50, v.get("train.eval_every"));
        assertEquals(100, v.get("train.save_every"));
        assertEquals(3, v.get("train.keep_last"));
        assertEquals(true, v.get("logging.tensorboard"));
        assertEquals(List.of(dir.resolve("sft.yml") + ":14: special_tokens: {\"eos_token\":\"<|im_end|>\"}: changes"
                + " the tokenizer's special tokens; mixtune trains with the model's tokenizer.json and its BOS/EOS as"
                + " they are"), imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path dpo = Files.writeString(dir.resolve("dpo.yml"), """
                base_model: /models/mistral
                adapter: qlora
                rl: dpo
                rl_beta: 0.05
                dpo_beta: 0.3
                dpo_label_smoothing: 0.1
                eval_steps: 0.25
                save_steps: 0.5
                """);
        AxolotlImport.Result dpoImport = AxolotlImport.read(dpo);
        assertEquals(0.05, dpoImport.values().get("dpo.beta"), "rl_beta wins over the deprecated dpo_beta");
        assertFalse(dpoImport.values().containsKey("dpo.label_smoothing"), "TRL's sigmoid loss ignores it");
        assertFalse(dpoImport.values().containsKey("train.eval_every"));
        String unmapped = String.join("\n", dpoImport.unmapped());
        assertTrue(unmapped.contains("dpo.yml:5: dpo_beta: 0.3: deprecated: axolotl uses rl_beta, which is set"),
                unmapped);
        assertTrue(unmapped.contains("dpo.yml:7: eval_steps: 0.25: a fraction of the total steps; mixtune counts in"
                + " steps: set train.eval_every"), unmapped);
        assertTrue(unmapped.contains("dpo.yml:8: save_steps: 0.5: a fraction of the total steps"), unmapped);
        assertTrue(unmapped.contains("dpo.yml:6: dpo_label_smoothing: 0.1: axolotl hands it to TRL's DPOConfig, whose"
                + " default sigmoid loss ignores it"), unmapped);
        assertEquals(List.of(), problemsBesidesPaths(dpoImport));

        Path deprecated = Files.writeString(dir.resolve("old.yml"), "adapter: lora\nrl: dpo\ndpo_beta: 0.3\n");
        assertEquals(0.3, AxolotlImport.read(deprecated).values().get("dpo.beta"));
    }

    /** axolotl's KD plugin keys are listed with why (top-k teacher log-probs, not a teacher model) and what to set. */
    @Test
    void axolotlKnowledgeDistillationKeysAreListedWithWhatToSet(@TempDir Path dir) throws IOException {
        Path kd = Files.writeString(dir.resolve("kd.yml"), """
                base_model: /models/mistral
                adapter: lora
                plugins:
                  - axolotl.integrations.kd.KDPlugin
                kd_trainer: true
                kd_ce_alpha: 0.1
                kd_alpha: 0.9
                kd_temperature: 1.0
                """);
        AxolotlImport.Result imported = AxolotlImport.read(kd);
        String unmapped = String.join("\n", imported.unmapped());
        for (String key : List.of("kd_trainer", "kd_ce_alpha", "kd_alpha", "kd_temperature")) {
            assertTrue(unmapped.contains(key + ": ") || unmapped.contains(key + " "), key + " in " + unmapped);
        }
        assertTrue(unmapped.contains("train.method: distillation"), unmapped);
        assertEquals(null, imported.values().get("train.method"));
    }

    /** rl: kto is train.method kto, with rl_beta (or trl.beta) and axolotl's kto weights in the kto section. */
    @Test
    void rlKtoMapsToTheKtoSection(@TempDir Path dir) throws IOException {
        Path kto = Files.writeString(dir.resolve("kto.yml"), """
                base_model: /models/mistral
                adapter: qlora
                rl: kto
                rl_beta: 0.2
                kto_desirable_weight: 1.33
                kto_undesirable_weight: 0.75
                micro_batch_size: 4
                datasets:
                  - path: argilla/kto-mix-15k
                    type: chatml.argilla_chat
                """);
        AxolotlImport.Result imported = AxolotlImport.read(kto);
        assertEquals("kto", imported.values().get("train.method"));
        assertEquals(0.2, imported.values().get("kto.beta"));
        assertEquals(1.33, imported.values().get("kto.desirable_weight"));
        assertEquals(0.75, imported.values().get("kto.undesirable_weight"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains("argilla/kto-mix-15k of type 'chatml.argilla_chat' (mixtune's kto reads files of"
                + " {prompt, completion, label} records"), unmapped);

        Path trl = Files.writeString(dir.resolve("trl.yml"), "adapter: lora\nrl: kto\nrl_beta: 0.2\ntrl:\n"
                + "  beta: 0.3\n");
        AxolotlImport.Result trlImport = AxolotlImport.read(trl);
        assertEquals(0.3, trlImport.values().get("kto.beta"));
        assertTrue(String.join("\n", trlImport.unmapped()).contains("rl_beta: 0.2: axolotl uses trl.beta"));
    }

    /**
     * rl: orpo is train.method orpo and rl: simpo train.method cpo with loss simpo, beta from trl.beta, rl_beta or
     * orpo_alpha in that order (axolotl's core/builders/rl.py), simpo_gamma and cpo_alpha for simpo; rl: cpo is none
     * of axolotl's.
     */
    @Test
    void rlOrpoAndSimpoMapToTheOrpoAndCpoSections(@TempDir Path dir) throws IOException {
        Path orpo = Files.writeString(dir.resolve("orpo.yml"), """
                base_model: /models/mistral
                adapter: qlora
                rl: orpo
                orpo_alpha: 0.2
                simpo_gamma: 1.0
                """);
        AxolotlImport.Result imported = AxolotlImport.read(orpo);
        assertEquals("orpo", imported.values().get("train.method"));
        assertEquals(0.2, imported.values().get("orpo.beta"));
        assertTrue(String.join("\n", imported.unmapped()).contains("simpo_gamma: 1.0: axolotl reads it for rl: simpo"
                + " only"), imported.unmapped().toString());

        Path simpo = Files.writeString(dir.resolve("simpo.yml"), """
                adapter: lora
                rl: simpo
                rl_beta: 2.5
                orpo_alpha: 0.1
                simpo_gamma: 1.4
                cpo_alpha: 0.0
                """);
        AxolotlImport.Result simpoImport = AxolotlImport.read(simpo);
        assertEquals("cpo", simpoImport.values().get("train.method"));
        assertEquals("simpo", simpoImport.values().get("cpo.loss"));
        assertEquals(2.5, simpoImport.values().get("cpo.beta"));
        assertEquals(1.4, simpoImport.values().get("cpo.simpo_gamma"));
        assertEquals(0.0, simpoImport.values().get("cpo.cpo_alpha"));
        assertTrue(String.join("\n", simpoImport.unmapped()).contains("orpo_alpha: 0.1: axolotl uses rl_beta"),
                simpoImport.unmapped().toString());

        Path noGamma = Files.writeString(dir.resolve("gamma.yml"), "adapter: lora\nrl: simpo\ntrl:\n  beta: 2.0\n");
        AxolotlImport.Result noGammaImport = AxolotlImport.read(noGamma);
        assertEquals(2.0, noGammaImport.values().get("cpo.beta"));
        assertTrue(String.join("\n", noGammaImport.notes()).contains("simpo_gamma"), noGammaImport.notes().toString());

        Path cpo = Files.writeString(dir.resolve("cpo.yml"), "adapter: lora\nrl: cpo\n");
        assertTrue(String.join("\n", AxolotlImport.read(cpo).unmapped()).contains("axolotl has no rl: cpo"));
    }

    /** rl: grpo is train.method grpo, its trl section's GRPOConfig keys in the grpo section; Python rewards listed. */
    @Test
    void rlGrpoMapsTheTrlSectionToTheGrpoSection(@TempDir Path dir) throws IOException {
        Path grpo = Files.writeString(dir.resolve("grpo.yml"), """
                base_model: /models/mistral
                adapter: lora
                rl: grpo
                micro_batch_size: 4
                trl:
                  beta: 0.001
                  num_generations: 4
                  max_completion_length: 256
                  temperature: 0.7
                  epsilon_high: 0.28
                  loss_type: dr_grpo
                  importance_sampling_level: sequence
                  scale_rewards: false
                  reward_funcs: [rewards.correctness, trl.rewards.think_format_reward]
                  reward_weights: [1.0, 0.5]
                  use_vllm: true
                datasets:
                  - path: openai/gsm8k
                    type: rewards.oai_gsm8k_transform
                """);
        AxolotlImport.Result imported = AxolotlImport.read(grpo);
        assertEquals("grpo", imported.values().get("train.method"));
        assertEquals(0.001, imported.values().get("grpo.beta"));
        assertEquals(4, imported.values().get("grpo.num_generations"));
        assertEquals(256, imported.values().get("grpo.max_completion_length"));
        assertEquals(0.7, imported.values().get("grpo.temperature"));
        assertEquals(0.28, imported.values().get("grpo.epsilon_high"));
        assertEquals("dr_grpo", imported.values().get("grpo.loss_type"));
        assertEquals("sequence", imported.values().get("grpo.importance_sampling_level"));
        assertEquals("none", imported.values().get("grpo.scale_rewards"));
        assertEquals(List.of("think_format_reward"), imported.values().get("grpo.reward_funcs"));
        assertEquals(List.of(1.0, 0.5), imported.values().get("grpo.reward_weights"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains("trl.reward_funcs [rewards.correctness] (Python functions"), unmapped);
        assertTrue(unmapped.contains("trl.use_vllm (mixtune samples with its own generator, no vLLM)"), unmapped);
        assertTrue(unmapped.contains("openai/gsm8k of type 'rewards.oai_gsm8k_transform' (mixtune's grpo reads"),
                unmapped);
    }

    /**
     * axolotl's config validator (check_rl_beta) copies the deprecated dpo_beta into rl_beta, where unset, whatever
     * rl is: rl: orpo and rl: simpo then train with it as beta, before orpo_alpha.
     */
    @Test
    void rlOrpoAndSimpoTakeTheDeprecatedDpoBetaAsRlBeta(@TempDir Path dir) throws IOException {
        Path orpo = Files.writeString(dir.resolve("orpo.yml"), "adapter: lora\nrl: orpo\ndpo_beta: 0.3\n"
                + "orpo_alpha: 0.2\n");
        AxolotlImport.Result imported = AxolotlImport.read(orpo);
        assertEquals(0.3, imported.values().get("orpo.beta"), imported.unmapped().toString());
        assertTrue(String.join("\n", imported.unmapped()).contains("orpo_alpha: 0.2: axolotl uses rl_beta"),
                imported.unmapped().toString());

        Path simpo = Files.writeString(dir.resolve("simpo.yml"), "adapter: lora\nrl: simpo\nrl_beta: 2.5\n"
                + "dpo_beta: 0.3\nsimpo_gamma: 1.0\n");
        AxolotlImport.Result simpoImport = AxolotlImport.read(simpo);
        assertEquals(2.5, simpoImport.values().get("cpo.beta"));
        assertTrue(String.join("\n", simpoImport.unmapped()).contains("dpo_beta: 0.3: deprecated: axolotl uses "
                + "rl_beta, which is set"), simpoImport.unmapped().toString());
    }

    /**
     * axolotl loads rl: orpo datasets with its own ORPO strategies (prompt_strategies/orpo: chat_template.argilla,
     * chatml.prompt_pairs), which have no ultra: chatml.ultra is DPO's (rl: dpo, ipo and simpo read it).
     */
    @Test
    void chatmlUltraIsNoneOfAxolotlsOrpoTypes(@TempDir Path dir) throws IOException {
        String datasets = "datasets:\n  - path: pairs.jsonl\n    type: chatml.ultra\n";
        AxolotlImport.Result orpo = AxolotlImport.read(Files.writeString(dir.resolve("orpo.yml"),
                "adapter: lora\nrl: orpo\n" + datasets));
        assertFalse(orpo.values().containsKey("data.files"), orpo.values().toString());
        assertTrue(String.join("\n", orpo.unmapped()).contains("prompt_strategies/orpo"), orpo.unmapped().toString());

        AxolotlImport.Result simpo = AxolotlImport.read(Files.writeString(dir.resolve("simpo.yml"),
                "adapter: lora\nrl: simpo\n" + datasets));
        assertEquals(List.of("pairs.jsonl"), simpo.values().get("data.files"));
        assertEquals("chatml", simpo.values().get("data.template"));
    }

    /** axolotl's check_simpo_warmup refuses warmup_ratio with rl: simpo ("Please use `warmup_steps` instead"). */
    @Test
    void simpoWithWarmupRatioIsListedAsAxolotlRefusesIt(@TempDir Path dir) throws IOException {
        AxolotlImport.Result simpo = AxolotlImport.read(Files.writeString(dir.resolve("simpo.yml"),
                "adapter: lora\nrl: simpo\nsimpo_gamma: 0.5\nwarmup_ratio: 0.1\n"));
        assertFalse(simpo.values().containsKey("train.warmup_ratio"), simpo.values().toString());
        assertTrue(String.join("\n", simpo.unmapped()).contains("warmup_ratio: 0.1: axolotl refuses it with rl: "
                + "simpo"), simpo.unmapped().toString());
    }

    /** axolotl's RL trainer builder reads trl.beta before rl_beta (and rl_beta before its deprecated dpo_beta). */
    @Test
    void trlBetaWinsOverRlBetaAsAxolotlReadsThem() throws IOException {
        Path both = Files.writeString(dir.resolve("trl.yml"), """
                adapter: lora
                rl: dpo
                rl_beta: 0.05
                dpo_beta: 0.3
                trl:
                  beta: 0.2
                  use_vllm: true
                """);
        AxolotlImport.Result imported = AxolotlImport.read(both);
        assertEquals(0.2, imported.values().get("dpo.beta"));
        String unmapped = String.join("\n", imported.unmapped());
        assertTrue(unmapped.contains("trl.yml:3: rl_beta: 0.05: axolotl uses trl.beta, which is set"), unmapped);
        assertTrue(unmapped.contains("trl.yml:4: dpo_beta: 0.3: axolotl uses trl.beta, which is set"), unmapped);
        assertTrue(unmapped.contains("trl: {\"beta\":0.2,\"use_vllm\":true}: trl.use_vllm: TRL settings of"),
                unmapped);
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path alone = Files.writeString(dir.resolve("alone.yml"), "adapter: lora\nrl: ipo\ntrl:\n  beta: 0.4\n");
        AxolotlImport.Result aloneImport = AxolotlImport.read(alone);
        assertEquals(0.4, aloneImport.values().get("dpo.beta"));
        assertEquals(List.of(), aloneImport.unmapped());
    }

    /** neftune_noise_alpha is train.neftune_noise_alpha for sft; listed, not mapped, for rl: dpo (mixtune refuses it). */
    @Test
    void neftuneNoiseAlphaMapsForSftOnly() throws IOException {
        Path sft = Files.writeString(dir.resolve("neftune.yml"), "adapter: lora\nneftune_noise_alpha: 5\n");
        AxolotlImport.Result imported = AxolotlImport.read(sft);
        assertEquals(5.0, imported.values().get("train.neftune_noise_alpha"));
        assertFalse(String.join("\n", imported.unmapped()).contains("neftune"), imported.unmapped().toString());
        Path dpo = Files.writeString(dir.resolve("neftune-dpo.yml"), "adapter: lora\nrl: dpo\nneftune_noise_alpha: 5\n");
        AxolotlImport.Result refused = AxolotlImport.read(dpo);
        assertFalse(refused.values().containsKey("train.neftune_noise_alpha"));
        assertTrue(String.join("\n", refused.unmapped()).contains("neftune_noise_alpha: 5: mixtune applies NEFTune to "
                + "sft only"), refused.unmapped().toString());
    }

    /** dpo_use_weighting is TRL's use_weighting (WPO), listed where TRL refuses it: with aot or its sft loss type. */
    @Test
    void dpoUseWeightingIsTrlsUseWeighting() throws IOException {
        Path weighted = Files.writeString(dir.resolve("wpo.yml"), "adapter: lora\nrl: dpo\ndpo_use_weighting: true\n");
        assertEquals(true, AxolotlImport.read(weighted).values().get("dpo.use_weighting"), "TRL's use_weighting");
        Path sorted = Files.writeString(dir.resolve("aot.yml"),
                "adapter: lora\nrl: dpo\ndpo_loss_type: [aot]\ndpo_use_weighting: true\n");
        AxolotlImport.Result aot = AxolotlImport.read(sorted);
        assertFalse(aot.values().containsKey("dpo.use_weighting"));
        assertTrue(String.join("\n", aot.unmapped()).contains("dpo_use_weighting: true: TRL refuses it with aot"),
                aot.unmapped().toString());

        Path sft = Files.writeString(dir.resolve("sft.yml"), "adapter: lora\nrl: dpo\ndpo_loss_type: [sigmoid, sft]\n"
                + "dpo_use_weighting: true\n");
        assertTrue(String.join("\n", AxolotlImport.read(sft).unmapped()).contains("dpo_use_weighting: true: TRL's sft"),
                AxolotlImport.read(sft).unmapped().toString());
    }

    /**
     * axolotl's DPOStrategy: rl: ipo is TRL's loss_type [ipo] (without label smoothing), rl: dpo hands dpo_loss_type
     * and dpo_loss_weights to TRL's loss_type and loss_weights, whose sft is dpo.sft_weight; rpo_alpha is refused by
     * axolotl.
     */
    @Test
    void axolotlsDpoLossKeysAreTrlsLossTypes() throws IOException {
        Path ipo = Files.writeString(dir.resolve("ipo.yml"), """
                adapter: lora
                rl: ipo
                rl_beta: 0.2
                dpo_label_smoothing: 0.1
                """);
        AxolotlImport.Result ipoImport = AxolotlImport.read(ipo);
        assertEquals("dpo", ipoImport.values().get("train.method"));
        assertEquals("ipo", ipoImport.values().get("dpo.loss"));
        assertEquals(0.2, ipoImport.values().get("dpo.beta"));
        assertFalse(ipoImport.values().containsKey("dpo.label_smoothing"));
        assertEquals(List.of(ipo + ":4: dpo_label_smoothing: 0.1: axolotl hands it to TRL for rl: dpo only; rl: ipo"
                + " is loss_type [ipo]"), ipoImport.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(ipoImport));

        Path mpo = Files.writeString(dir.resolve("mpo.yml"), """
                adapter: lora
                rl: dpo
                dpo_loss_type: [sigmoid, bco_pair, sft]
                dpo_loss_weights: [0.8, 0.2, 1.0]
                rpo_alpha: 0.5
                """);
        AxolotlImport.Result mpoImport = AxolotlImport.read(mpo);
        assertEquals(List.of("sigmoid", "bco_pair"), mpoImport.values().get("dpo.loss"));
        assertEquals(List.of(0.8, 0.2), mpoImport.values().get("dpo.loss_weights"));
        assertEquals(1.0, mpoImport.values().get("dpo.sft_weight"));
        assertEquals(1, mpoImport.unmapped().size(), mpoImport.unmapped().toString());
        assertTrue(mpoImport.unmapped().get(0).startsWith(mpo + ":5: rpo_alpha: 0.5: axolotl refuses it"),
                mpoImport.unmapped().toString());
        assertEquals(List.of(), problemsBesidesPaths(mpoImport));

        Path exo = Files.writeString(dir.resolve("exo.yml"), """
                adapter: lora
                rl: dpo
                dpo_loss_type: [exo_pair]
                dpo_label_smoothing: 0.001
                """);
        AxolotlImport.Result exoImport = AxolotlImport.read(exo);
        assertEquals("exo_pair", exoImport.values().get("dpo.loss"));
        assertEquals(0.001, exoImport.values().get("dpo.label_smoothing"));
        assertEquals(List.of(), exoImport.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(exoImport));

        Path unknown = Files.writeString(dir.resolve("kto.yml"), """
                adapter: lora
                rl: dpo
                dpo_loss_type: [kto_pair]
                dpo_loss_weights: [1.0]
                """);
        AxolotlImport.Result unknownImport = AxolotlImport.read(unknown);
        assertFalse(unknownImport.values().containsKey("dpo.loss"));
        assertEquals(2, unknownImport.unmapped().size(), unknownImport.unmapped().toString());
        assertTrue(unknownImport.unmapped().get(0).startsWith(unknown + ":3: dpo_loss_type: [\"kto_pair\"]: not TRL"
                + " 1.13's: [kto_pair]"), unknownImport.unmapped().toString());
    }

    @Test
    void chatmlUltraPairsAreChatMlWhateverTheChatTemplate() throws IOException {
        // prompt_strategies/dpo/chatml.py's ultra writes <|im_start|>...<|im_end|> into the pairs itself
        Path config = Files.writeString(dir.resolve("ultra.yml"), """
                base_model: /models/mistral
                adapter: lora
                rl: dpo
                datasets:
                  - path: pairs.jsonl
                    type: chatml.ultra
                    split: train
                chat_template: mistral_v1
                """);
        AxolotlImport.Result imported = AxolotlImport.read(config);
        assertEquals(List.of("pairs.jsonl"), imported.values().get("data.files"));
        assertEquals("chatml", imported.values().get("data.template"));
        assertEquals(List.of(dir.resolve("ultra.yml") + ":8: chat_template: \"mistral_v1\": the datasets' type"
                + " chatml.ultra writes ChatML whatever chat_template says (data.template: chatml)"),
                imported.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(imported));

        Path llama = Files.writeString(dir.resolve("llama.yml"), """
                base_model: /models/mistral
                adapter: lora
                rl: dpo
                datasets:
                  - path: ultra.jsonl
                    type: llama3.ultra
                """);
        AxolotlImport.Result llamaImport = AxolotlImport.read(llama);
        assertFalse(llamaImport.values().containsKey("data.files"));
        assertFalse(llamaImport.values().containsKey("data.template"));
        assertTrue(String.join("\n", llamaImport.unmapped()).contains("ultra.jsonl of type 'llama3.ultra' (it writes"
                + " llama3's chat template into the pairs; mixtune's templates are mistral and chatml)"),
                String.join("\n", llamaImport.unmapped()));
    }

    private AxolotlImport.Result importSft(String name, String base, String chatTemplate, String datasetKeys)
            throws IOException {
        return AxolotlImport.read(Files.writeString(dir.resolve(name + ".yml"), """
                base_model: %s
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                %s%s""".formatted(base, datasetKeys.indent(4), chatTemplate)));
    }

    /**
     * chat_template: tokenizer_default_fallback_NAME is the tokenizer's template where it has one, else NAME
     * (utils/chat_templates/base.py, get_chat_template): with mistral_v1 that is mixtune's auto; with chatml the
     * import looks at a local base_model's tokenizer_config.json, and refuses, naming the key, where it cannot.
     */
    @Test
    void tokenizerDefaultFallbackIsTheModelsTemplateElseTheNamedOne() throws IOException {
        AxolotlImport.Result mistral = importSft("fallback-mistral", "/models/mistral",
                "chat_template: tokenizer_default_fallback_mistral_v1\n", "");
        assertEquals("auto", mistral.values().get("data.template"));
        assertEquals(List.of(), mistral.unmapped());
        assertEquals(List.of(), problemsBesidesPaths(mistral));

        Path withTemplate = Files.createDirectories(dir.resolve("with-template"));
        Files.writeString(withTemplate.resolve("tokenizer_config.json"), "{\"chat_template\": \"{{ messages }}\"}");
        Path without = Files.createDirectories(dir.resolve("without-template"));
        Files.writeString(without.resolve("tokenizer_config.json"), "{\"bos_token\": \"<s>\"}");
        assertEquals("hf", importSft("own", withTemplate.toString(),
                "chat_template: tokenizer_default_fallback_chatml\n", "").values().get("data.template"));
        AxolotlImport.Result chatml = importSft("chatml", without.toString(),
                "chat_template: tokenizer_default_fallback_chatml\n", "");
        assertEquals("chatml", chatml.values().get("data.template"));
        assertEquals(List.of(), chatml.unmapped());

        AxolotlImport.Result hub = importSft("hub", "mistralai/Mistral-7B-v0.1",
                "chat_template: tokenizer_default_fallback_chatml\n", "");
        assertFalse(hub.values().containsKey("data.template"));
        String hubUnmapped = String.join("\n", hub.unmapped());
        assertTrue(hubUnmapped.contains("chat_template: \"tokenizer_default_fallback_chatml\": the model's template,"
                + " else chatml: base_model is no local folder"), hubUnmapped);
        AxolotlImport.Result llama = importSft("llama", without.toString(),
                "chat_template: tokenizer_default_fallback_llama3\n", "");
        assertTrue(String.join("\n", llama.unmapped()).contains("chat_template: \"tokenizer_default_fallback_llama3\":"
                + " the model's template, else llama3, which mixtune lacks"), String.join("\n", llama.unmapped()));
    }

    /**
     * axolotl's other chat keys: a Jinja template of the config's own (chat_template: jinja, chat_template_jinja) is
     * refused naming the key and the way to use it; roles that map the speakers as mixtune's format reads them are
     * taken, others refused naming roles; field names mixtune does not read are refused naming the key.
     */
    @Test
    void axolotlsOtherChatKeysAreMappedOrRefusedByName() throws IOException {
        AxolotlImport.Result jinja = importSft("jinja", "/models/mistral",
                "chat_template: jinja\nchat_template_jinja: \"{{ messages }}\"\n", "");
        String jinjaUnmapped = String.join("\n", jinja.unmapped());
        assertTrue(jinjaUnmapped.contains(":6: chat_template: \"jinja\": the template chat_template_jinja gives")
                && jinjaUnmapped.contains(":7: chat_template_jinja: \"{{ messages }}\": a Jinja chat template of the"
                + " config's own: put it in the model's tokenizer_config.json and use chat_template:"
                + " tokenizer_default (data.template: hf)"), jinjaUnmapped);

        AxolotlImport.Result roles = importSft("roles", "/models/mistral", "", """
                field_messages: conversations
                message_property_mappings: {role: from, content: value}
                roles:
                  user: [human]
                  assistant: [gpt]
                  system: [system]
                """);
        assertEquals("sharegpt", roles.values().get("data.format"));
        assertEquals(List.of(), roles.unmapped());
        AxolotlImport.Result messageRoles = importSft("message-roles", "/models/mistral", "",
                "roles: {user: [user], assistant: [assistant]}\n");
        assertEquals("messages", messageRoles.values().get("data.format"));
        assertEquals(List.of(), messageRoles.unmapped());

        AxolotlImport.Result otherRoles = importSft("other-roles", "/models/mistral", "",
                "roles: {user: [human, user], assistant: [bot]}\n");
        assertFalse(otherRoles.values().containsKey("data.files"));
        String rolesUnmapped = String.join("\n", otherRoles.unmapped());
        assertTrue(rolesUnmapped.contains("chats.jsonl: roles {\"user\":[\"human\",\"user\"],\"assistant\":"
                + "[\"bot\"]} (mixtune's messages read the roles system, user, assistant and tool as they are: human"
                + " as user, bot as assistant are not read)"), rolesUnmapped);

        AxolotlImport.Result fields = importSft("fields", "/models/mistral", "",
                "field_messages: dialogue\nmessage_property_mappings: {role: speaker, content: text}\n");
        String fieldsUnmapped = String.join("\n", fields.unmapped());
        assertTrue(fieldsUnmapped.contains("chats.jsonl: field_messages \"dialogue\", message_property_mappings"
                + " {\"role\":\"speaker\",\"content\":\"text\"} (mixtune reads messages of role and content, or"
                + " conversations of from and value)"), fieldsUnmapped);
    }
}
