package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.Refusal;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune init-adapter`: an untrained LoRA adapter in PEFT format (PEFT's get_peft_model then save_pretrained). */
final class InitAdapterCommand implements Command {

    @Override
    public String name() {
        return "init-adapter";
    }

    @Override
    public String summary() {
        return "write an untrained LoRA adapter for a model in Hugging Face PEFT format";
    }

    @Override
    public String usage() {
        return "--model DIR --out DIR [--r N] [--alpha A] [--targets all-linear|q_proj,v_proj,...] [--init peft|random]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model directory"))
                .addOption(Mixtune.option("out", "DIR", "directory to write adapter_config.json and "
                        + "adapter_model.safetensors to"))
                .addOption(Mixtune.option("r", "N", "LoRA rank (default 8)"))
                .addOption(Mixtune.option("alpha", "A", "LoRA alpha; scale = alpha / r (default 16)"))
                .addOption(Mixtune.option("dropout", "P", "LoRA dropout recorded for training (default 0)"))
                .addOption(Mixtune.option("targets", "NAMES", "all-linear (default: every linear but lm_head and the "
                        + "router) or comma-separated names from " + new java.util.TreeSet<>(LoraConfig.MODULE_NAMES)))
                .addOption(Mixtune.option("rslora", null, "scale by alpha / sqrt(r) (rank-stabilised LoRA)"))
                .addOption(Mixtune.option("dora", null, "DoRA (PEFT's use_dora): a magnitude per output row, "
                        + "starting at the row norms of W + scale B A; not on Mixtral experts or the router"))
                .addOption(Mixtune.option("init", "KIND", "peft (default: A Kaiming-uniform, B zero) or random "
                        + "(B random too, as PEFT's init_lora_weights=False)"))
                .addOption(Mixtune.option("seed", "S", "random seed (default 0)"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        InputDirectories.requireModel("model", modelDir);
        Path outDir = Path.of(Mixtune.requiredOption(line, "out"));
        LoraModel.Init init = switch (line.getOptionValue("init", "peft").toLowerCase(Locale.ROOT)) {
            case "peft" -> LoraModel.Init.PEFT_DEFAULT;
            case "random" -> LoraModel.Init.RANDOM;
            default -> throw new UsageException("--init expects peft or random, got '" + line.getOptionValue("init") + "'");
        };
        LoraConfig config;
        try {
            List<String> targets = Arrays.stream(line.getOptionValue("targets", LoraConfig.ALL_LINEAR).split(","))
                    .map(String::trim).toList();
            config = new LoraConfig(Mixtune.intOption(line, "r", 8), Mixtune.doubleOption(line, "alpha", 16),
                    Mixtune.doubleOption(line, "dropout", 0), targets, line.hasOption("rslora"), Map.of(), Map.of())
                    .withDora(line.hasOption("dora"));
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
        if (Files.exists(outDir.resolve(PeftAdapter.CONFIG_FILE))) {
            throw new Refusal(outDir + " already holds an adapter (" + PeftAdapter.CONFIG_FILE + ")");
        }
        // On the CPU whatever the machine has: PEFT's init drawn there gives the same adapter file everywhere.
        try (NDManager manager = NDManager.newBaseManager(Device.cpu());
                CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            try {
                lora.addAdapter("default", config, init, Mixtune.intOption(line, "seed", 0));
            } catch (IllegalArgumentException e) {
                throw new UsageException(e.getMessage());
            }
            PeftAdapter.save(lora, "default", outDir, modelDir.toString());
            java.util.Set<String> names = new java.util.TreeSet<>();
            lora.layers().keySet().forEach(m -> names.add(m.substring(m.lastIndexOf('.') + 1)));
            out.printf(Locale.ROOT, "wrote a rank-%d %s adapter on %d layers (%s) to %s%n", config.r(),
                    config.useDora() ? "DoRA" : "LoRA",
                    lora.layers().size(), String.join(",", names), outDir);
        }
        return Mixtune.OK;
    }
}
