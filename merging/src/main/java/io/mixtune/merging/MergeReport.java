package io.mixtune.merging;

import java.math.BigDecimal;
import java.math.MathContext;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * What a merge did, for the command line to print.
 *
 * @param adapters whether the inputs were PEFT adapters (else full checkpoints)
 * @param base the model task vectors were measured from, or null
 * @param tensors output tensors (checkpoints) or adapted modules (adapters)
 * @param coefficients the weight each input got in the sum (after normalising, or the EMA's); empty for ties, dare, slerp
 * @param compressedModules adapters: modules whose summed rank was cut by SVD (0 when no rank was asked for)
 * @param maxError adapters: the largest relative Frobenius error ||dW - dW_k|| / ||dW|| of a compressed module
 */
public record MergeReport(MergeMethod method, boolean adapters, List<Path> inputs, Path base, Path out, int tensors,
        double[] coefficients, int files, double seconds, int compressedModules, double maxError, double meanError) {

    public List<String> lines() {
        List<String> lines = new ArrayList<>();
        lines.add(String.format(Locale.ROOT, "merged %d %s with %s%s into %s: %d %s in %.1f s (%.1f %s/s)",
                inputs.size(), adapters ? "adapters" : "checkpoints", method.yamlName(),
                base == null ? "" : " (base " + base + ")", out, tensors,
                adapters ? "modules" : "tensors", seconds, tensors / Math.max(seconds, 1e-9),
                adapters ? "modules" : "tensors"));
        if (coefficients.length > 0) {
            StringBuilder weights = new StringBuilder("  weights:");
            for (int i = 0; i < coefficients.length; i++) {
                weights.append(' ').append(new BigDecimal(coefficients[i]).round(new MathContext(6)).stripTrailingZeros()
                        .toPlainString())
                        .append(i < inputs.size() ? " " + inputs.get(i) : "").append(i + 1 < coefficients.length ? "," : "");
            }
            lines.add(weights.toString());
        }
        if (compressedModules > 0) {
            lines.add(String.format(Locale.ROOT, "  svd re-compression of %d of %d modules: relative Frobenius error"
                    + " max %.3e, mean %.3e", compressedModules, tensors, maxError, meanError));
        }
        return lines;
    }
}
