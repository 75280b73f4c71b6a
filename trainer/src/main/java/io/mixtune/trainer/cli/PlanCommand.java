package io.mixtune.trainer.cli;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.distill.DistillTeacher;
import io.mixtune.trainer.plan.MemoryPlan;
import io.mixtune.trainer.recipe.Distillation;
import io.mixtune.trainer.recipe.Recipe;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune plan`: the memory a recipe's training will take, predicted from config.json (or the preset) and the recipe
 * before anything loads ({@link MemoryPlan}), part by part, and whether it fits the device: for a GPU recipe the
 * common sizes (24, 32, 40, 80 GB) and --device-memory; for a CPU one this machine's memory or --device-memory.
 */
final class PlanCommand implements Command {
    /** GPU memory sizes as sold; a "24 GB" card holds 24 GiB. */
    static final List<Integer> GPU_SIZES_GB = List.of(24, 32, 40, 80);
    private static final double GIB = 1L << 30;

    @Override
    public String name() {
        return "plan";
    }

    @Override
    public String summary() {
        return "predict a recipe's training memory (weights, adapter, optimizer, activations) and whether it fits";
    }

    @Override
    public String usage() {
        return "--recipe R.yaml [--set key.path=value ...] [--device-memory GB]";
    }

    @Override
    public Options options() {
        return new Options().addOption(Mixtune.option("recipe", "FILE", "the recipe to plan"))
                .addOption(TrainCommand.setOption())
                .addOption(Mixtune.option("device-memory", "GB", "the device's memory in GB (GiB, as GPUs are "
                        + "labelled); default: 24, 32, 40 and 80 for a GPU recipe, this machine's memory for a "
                        + "CPU one"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Recipe recipe = TrainCommand.readRecipe(line);
        double deviceGb = Mixtune.doubleOption(line, "device-memory", Double.NaN);
        if (!Double.isNaN(deviceGb) && !(deviceGb > 0)) {
            throw new UsageException("--device-memory expects a positive number of GB, got " + deviceGb);
        }
        ModelConfig config = recipe.model().path() != null
                ? ModelConfig.read(Path.of(recipe.model().path(), "config.json"))
                : ModelPreset.load(recipe.model().preset());
        MemoryPlan.Setup setup = MemoryPlan.Setup.of(recipe, config, MemoryPlan.Setup.worstCaseTargets(recipe));
        MemoryPlan plan = MemoryPlan.predict(setup);
        MemoryPlan other = MemoryPlan.predict(setup.withCheckpointing(!setup.gradientCheckpointing()));
        if (recipe.train().method().equals("distillation")) {
            DistillTeacher.check(recipe);
            Distillation distillation = recipe.distillation();
            ModelConfig teacher = DistillTeacher.config(recipe);
            boolean nf4 = "nf4".equals(distillation.teacherQuantizeOr(recipe.model().quantize()));
            LoraConfig adapter = distillation.teacherAdapter() == null ? null
                    : PeftAdapter.readConfig(Path.of(distillation.teacherAdapter(), PeftAdapter.CONFIG_FILE));
            plan = plan.withTeacher(teacher, nf4, adapter);
            other = other.withTeacher(teacher, nf4, adapter);
        }
        if (recipe.train().readsPrompts()) {
            // grpo.reward_funcs entries that are folders are reward models, each a second copy of the base
            List<LoraConfig> rewardModels = new ArrayList<>();
            for (String entry : recipe.policyGradient().rewardFuncs()) {
                if (Files.isRegularFile(Path.of(entry, PeftAdapter.CONFIG_FILE))) {
                    rewardModels.add(PeftAdapter.readConfig(Path.of(entry, PeftAdapter.CONFIG_FILE)));
                }
            }
            plan = plan.withRewardModels(rewardModels);
            other = other.withRewardModels(rewardModels);
        }

        out.println("memory plan for " + line.getOptionValue("recipe") + " (from the shapes alone: nothing loaded)");
        out.printf(Locale.ROOT, "model     %s: %s, %d layers%s, %s parameters; %s, %s compute, on a %s%n",
                recipe.model().path() != null ? recipe.model().path() : recipe.model().preset() + " (preset)",
                config.modelType().hfName(), config.numHiddenLayers(), config.isMixtureOfExperts()
                        ? String.format(Locale.ROOT, ", %d experts (top %d)", config.numLocalExperts(),
                                config.numExpertsPerTok()) : "",
                MemoryPlan.count(config.parameterCount()), setup.nf4() ? "NF4 base" : "unquantized base",
                setup.computeBytes() == 2 ? "fp16" : "fp32", setup.device() == MemoryPlan.Device.GPU ? "GPU" : "CPU");
        out.printf(Locale.ROOT, "batch     micro-batch %d x %d tokens%s, at most %,d target positions; %s r %d, "
                + "dropout %s; gradient checkpointing %s%n", setup.rows(), setup.length(),
                setup.packed() ? " packed (" + recipe.data().packingStrategy() + ")" : "", setup.targets(),
                setup.lora().useDora() ? "DoRA" : "LoRA", setup.lora().r(), setup.lora().dropout(),
                setup.gradientCheckpointing() ? "on" : "off");
        out.println();
        out.printf(Locale.ROOT, "%-36s %9s  %s%n", "component", "GiB", "detail");
        for (MemoryPlan.Component component : plan.components()) {
            out.printf(Locale.ROOT, "%-36s %9.2f  %s%n", component.name(), component.bytes() / GIB,
                    component.detail());
        }
        out.printf(Locale.ROOT, "%-36s %9.2f  peak: %s%n", "total", plan.total() / GIB, plan.peak());
        out.printf(Locale.ROOT, "%-36s %9.2f  (train.gradient_checkpointing=%s)%n", "total with checkpointing "
                + (setup.gradientCheckpointing() ? "off" : "on"), other.total() / GIB, !setup.gradientCheckpointing());
        out.println();

        List<Double> sizes = new ArrayList<>();
        if (!Double.isNaN(deviceGb)) {
            sizes.add(deviceGb);
        } else if (setup.device() == MemoryPlan.Device.GPU) {
            GPU_SIZES_GB.forEach(gb -> sizes.add(gb.doubleValue()));
        } else {
            sizes.add(machineMemoryGb());
        }
        String device = setup.device() == MemoryPlan.Device.GPU ? "GPU" : "memory";
        out.printf(Locale.ROOT, "%-12s %-5s %s%n", device, "fits", "headroom");
        for (double gb : sizes) {
            double headroom = gb - plan.total() / GIB;
            String size = gb == Math.rint(gb) ? String.format(Locale.ROOT, "%.0f GB", gb)
                    : String.format(Locale.ROOT, "%.1f GB", gb);
            out.printf(Locale.ROOT, "%-12s %-5s %+.2f GiB%n", size, headroom >= 0 ? "yes" : "no", headroom);
        }
        return Mixtune.OK;
    }

    /** MemTotal of /proc/meminfo, in GiB. */
    private static double machineMemoryGb() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemTotal:")) {
                    return Long.parseLong(line.replaceAll("\\D", "")) * 1024 / GIB;
                }
            }
        } catch (IOException | NumberFormatException e) {
            // not Linux: fall through
        }
        throw new UsageException("cannot read this machine's memory (/proc/meminfo): give --device-memory GB");
    }
}
