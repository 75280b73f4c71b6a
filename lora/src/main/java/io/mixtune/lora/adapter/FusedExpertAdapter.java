package io.mixtune.lora.adapter;

import io.mixtune.model.config.ModelConfig;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads the Mixtral expert adapters that PEFT saves on transformers 5, where experts are fused parameters rather than
 * modules (PEFT's target_parameters): per layer, {@code mlp.experts.base_layer} holds the LoRA of gate_up_proj
 * [E, 2I, H] at rank 2r, {@code mlp.experts} the LoRA of down_proj [E, H, I], {@code mlp.gate} the router's. The
 * experts' factors are stacked: A's rows expert-major (A.reshape(E, r, in)[e]), B's columns rank-major
 * (B.reshape(out, r, E)[:, :, e]), so expert e's update is B_e A_e. This turns them into mixtune's per-expert modules
 * (w1 and w3 share A_e and take B_e's gate and up rows), with ranks and scales as PEFT computes them.
 */
final class FusedExpertAdapter {
    private static final Pattern FUSED = Pattern.compile("(model\\.layers\\.\\d+)\\.mlp\\.(experts\\.base_layer|experts|gate)");

    private FusedExpertAdapter() {}

    /** A module's LoRA factors as read: A [r, in] and B [out, r], row-major. */
    record Factors(long[] aShape, float[] a, long[] bShape, float[] b) {
        int rank() {
            return (int) aShape[0];
        }
    }

    static boolean isFused(String module) {
        return FUSED.matcher(module).matches();
    }

    /**
     * Replaces the fused entries of {@code factors} (in place) by per-expert ones and returns the config that gives
     * them PEFT's ranks and scales.
     */
    static LoraConfig toPerExpert(ModelConfig model, LoraConfig config, Map<String, Factors> factors) {
        if (!model.isMixtureOfExperts()) {
            throw new IllegalArgumentException("adapter weights for fused experts (mlp.experts) on a "
                    + model.modelType().hfName() + " model, which has no experts");
        }
        if (config.selection().targetModulesRegex()) {
            throw new IllegalArgumentException("fused expert weights (mlp.experts) with target_modules as the regex \""
                    + config.targetModules().get(0) + "\": mixtune reads fused experts saved with a list of targets");
        }
        int experts = model.numLocalExperts();
        int inter = model.intermediateSize();
        Map<String, Integer> ranks = new LinkedHashMap<>(config.rankPattern());
        Map<String, Double> alphas = new LinkedHashMap<>(config.alphaPattern());
        List<String> targets = new ArrayList<>(config.targetModules());
        for (String module : List.copyOf(factors.keySet())) {
            Matcher fused = FUSED.matcher(module);
            if (!fused.matches()) {
                continue;
            }
            Factors f = factors.remove(module);
            String layer = fused.group(1);
            String part = fused.group(2);
            // PEFT's patterns and scale apply under the fused parameter's name.
            String peftName = switch (part) {
                case "experts.base_layer" -> layer + ".mlp.experts.gate_up_proj";
                case "experts" -> layer + ".mlp.experts.down_proj";
                default -> layer + ".mlp.gate";
            };
            if (part.equals("gate")) {
                factors.put(layer + ".block_sparse_moe.gate", f);
                record(ranks, alphas, targets, "gate", f.rank(), config, peftName);
                continue;
            }
            if (f.aShape()[0] % experts != 0 || f.bShape()[1] != f.aShape()[0]) {
                throw new IllegalArgumentException(module + ": A " + java.util.Arrays.toString(f.aShape()) + " and B "
                        + java.util.Arrays.toString(f.bShape()) + " are not " + experts + " experts' stacked factors");
            }
            int rank = (int) (f.aShape()[0] / experts);
            int in = (int) f.aShape()[1];
            int out = (int) f.bShape()[0];
            boolean gateUp = part.equals("experts.base_layer");
            if (gateUp && out != 2 * inter) {
                throw new IllegalArgumentException(module + ": gate_up_proj's B has " + out + " rows, expected 2 x "
                        + "intermediate_size = " + 2 * inter);
            }
            for (int e = 0; e < experts; e++) {
                float[] a = new float[rank * in];
                System.arraycopy(f.a(), e * rank * in, a, 0, rank * in);
                float[] b = new float[out * rank];
                for (int o = 0; o < out; o++) {
                    for (int k = 0; k < rank; k++) {
                        b[o * rank + k] = f.b()[(o * rank + k) * experts + e];
                    }
                }
                String expert = layer + ".block_sparse_moe.experts." + e;
                if (gateUp) {
                    int half = inter * rank;
                    factors.put(expert + ".w1", new Factors(new long[] {rank, in}, a, new long[] {inter, rank},
                            java.util.Arrays.copyOfRange(b, 0, half)));
                    factors.put(expert + ".w3", new Factors(new long[] {rank, in}, a.clone(), new long[] {inter, rank},
                            java.util.Arrays.copyOfRange(b, half, 2 * half)));
                } else {
                    factors.put(expert + ".w2", new Factors(new long[] {rank, in}, a, new long[] {out, rank}, b));
                }
            }
            if (gateUp) {
                record(ranks, alphas, targets, "w1", rank, config, peftName);
                record(ranks, alphas, targets, "w3", rank, config, peftName);
            } else {
                record(ranks, alphas, targets, "w2", rank, config, peftName);
            }
        }
        return new LoraConfig(config.r(), config.alpha(), config.dropout(), targets, config.useRslora(), ranks, alphas,
                config.selection());
    }

    /** Gives leaf modules {@code leaf} the rank found and PEFT's alpha under the fused name, the same in every layer. */
    private static void record(Map<String, Integer> ranks, Map<String, Double> alphas, List<String> targets,
            String leaf, int rank, LoraConfig config, String peftName) {
        double alpha = config.alphaOf(peftName);
        Integer known = ranks.putIfAbsent(leaf, rank);
        Double knownAlpha = alphas.putIfAbsent(leaf, alpha);
        if ((known != null && known != rank) || (knownAlpha != null && knownAlpha != alpha)) {
            throw new IllegalArgumentException("fused expert adapter: " + leaf + " has rank " + rank + " and alpha "
                    + alpha + " in " + peftName + " but rank " + known + " and alpha " + knownAlpha + " elsewhere; "
                    + "mixtune needs them equal across layers");
        }
        if (!targets.contains(leaf)) {
            targets.add(leaf);
        }
    }
}
