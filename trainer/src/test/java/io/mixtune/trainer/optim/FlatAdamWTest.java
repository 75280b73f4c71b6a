package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import io.mixtune.model.nn.InPlaceCopy;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/**
 * The flat optimizer step (FlatGradients, AdamW's flat moments, flat unscaling and clipping, zeroGrad) against the
 * per-array algorithm it replaced, kept below as it was: every parameter, moment and gradient norm equal bit for bit.
 */
class FlatAdamWTest {
    /** Tiny, odd and one past libtorch's parallel grain (32768 elements), whose reductions split across threads. */
    private static final List<Shape> SHAPES = List.of(new Shape(1), new Shape(3, 5), new Shape(7, 1, 3),
            new Shape(257), new Shape(8, 4097), new Shape(2, 17), new Shape(16, 64));

    @ParameterizedTest
    @CsvSource({"0.0, false, 4194304, 1", "0.1, false, 4194304, 1", "0.0, true, 4194304, 1", "0.01, true, 4194304, 1",
            "0.1, true, 300, 4", "0.0, false, 1, 7"})
    void flatStepsEqualThePerArrayStepsBitForBit(double weightDecay, boolean lossScaled, long bucketElements,
            int buckets) {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> flat = parameters(manager, 1);
            List<NDArray> perArray = parameters(manager, 1);
            AdamW optimizer = new AdamW(flat, 0.9, 0.999, 1e-8, weightDecay, bucketElements);
            assertEquals(buckets, optimizer.bucketCount());
            PerArrayAdamW reference = new PerArrayAdamW(perArray, 0.9, 0.999, 1e-8, weightDecay);
            LossScaler flatScaler = lossScaled ? LossScaler.dynamic() : LossScaler.off();
            LossScaler referenceScaler = lossScaled ? LossScaler.dynamic() : LossScaler.off();
            // Gradient sizes that clip at 1.0 on some steps and not on others.
            double[] magnitudes = {0.001, 3.0, 0.01, 250.0, 0.0003, 1.0};
            for (int step = 0; step < magnitudes.length; step++) {
                double lr = 1e-2 * (step + 1);
                double scale = flatScaler.scale();
                Random random = new Random(100 + step);
                setGradients(flat, random.nextLong(), magnitudes[step] * scale);
                setGradients(perArray, new Random(100 + step).nextLong(), magnitudes[step] * scale);
                OptimizerUpdate.Outcome outcome = OptimizerUpdate.apply(1.5, 1.0, optimizer, lr, flatScaler);
                double referenceNorm = PerArrayAdamW.apply(perArray, 1.0, reference, lr, referenceScaler);
                assertEquals(referenceNorm, outcome.gradNorm(), "grad norm, step " + step);
                for (int i = 0; i < flat.size(); i++) {
                    String where = "step " + step + ", array " + i + " " + flat.get(i).getShape();
                    assertArrayEquals(perArray.get(i).toFloatArray(), flat.get(i).toFloatArray(), 0f, where);
                    assertArrayEquals(reference.firstMoments.get(i).toFloatArray(),
                            optimizer.firstMoments().get(i).toFloatArray(), 0f, "exp_avg, " + where);
                    assertArrayEquals(reference.secondMoments.get(i).toFloatArray(),
                            optimizer.secondMoments().get(i).toFloatArray(), 0f, "exp_avg_sq, " + where);
                    assertEquals(flat.get(i).getShape(), optimizer.firstMoments().get(i).getShape());
                }
            }
            assertEquals(reference.step, optimizer.stepCount());
        }
    }

    /** A restored optimizer goes on exactly as the one whose moments were saved (resume). */
    @Test
    void restoredMomentsGoOnAsTheSavedOnes() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> first = parameters(manager, 2);
            AdamW optimizer = new AdamW(first, 0.9, 0.999, 1e-8, 0.1, 300);
            for (int step = 0; step < 2; step++) {
                setGradients(first, step, 0.5);
                optimizer.step(1e-2);
            }
            List<float[]> m = optimizer.firstMoments().stream().map(NDArray::toFloatArray).toList();
            List<float[]> v = optimizer.secondMoments().stream().map(NDArray::toFloatArray).toList();
            List<NDArray> second = new ArrayList<>();
            for (NDArray parameter : first) {
                NDArray copy = manager.create(parameter.toFloatArray(), parameter.getShape());
                copy.setRequiresGradient(true);
                second.add(copy);
            }
            AdamW resumed = new AdamW(second, 0.9, 0.999, 1e-8, 0.1);
            for (int i = 0; i < m.size(); i++) {
                InPlaceCopy.copy(resumed.firstMoments().get(i), m.get(i));
                InPlaceCopy.copy(resumed.secondMoments().get(i), v.get(i));
            }
            resumed.restoreStepCount(optimizer.stepCount());
            for (int step = 2; step < 4; step++) {
                setGradients(first, step, 0.5);
                setGradients(second, step, 0.5);
                optimizer.step(1e-2);
                resumed.step(1e-2);
            }
            for (int i = 0; i < first.size(); i++) {
                assertArrayEquals(first.get(i).toFloatArray(), second.get(i).toFloatArray(), 0f, "array " + i);
            }
        }
    }

    /** zero writes zeros over every gradient, NaNs included, and the flat gradients read what backward wrote. */
    @Test
    void zeroOverwritesNaNsAndTheFlatGradientsFollowTheArrays() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = parameters(manager, 3);
            setGradients(parameters, 5, 1.0);
            try (NDArray gradients = FlatGradients.of(parameters.subList(1, parameters.size()))) {
                float[] all = gradients.toFloatArray();
                int offset = 0;
                for (NDArray parameter : parameters.subList(1, parameters.size())) {
                    float[] own;
                    try (NDArray gradient = parameter.getGradient()) {
                        own = gradient.toFloatArray();
                    }
                    float[] run = java.util.Arrays.copyOfRange(all, offset, offset + own.length);
                    assertArrayEquals(own, run, 0f);
                    offset += own.length;
                }
                assertEquals(all.length, offset);
            }
            try (NDArray gradient = parameters.get(1).getGradient()) {
                gradient.set(new NDIndex("..."), Float.NaN);
            }
            GradientClipping.zero(parameters);
            for (NDArray parameter : parameters) {
                try (NDArray gradient = parameter.getGradient()) {
                    for (float value : gradient.toFloatArray()) {
                        assertEquals(0f, value);
                    }
                }
            }
            // Zeroed in place: the next backward accumulates into the same arrays.
            setGradients(parameters, 6, 1.0);
            try (NDArray gradient = parameters.get(0).getGradient()) {
                assertTrue(gradient.toFloatArray()[0] != 0f);
            }
        }
    }

    private static List<NDArray> parameters(NDManager manager, long seed) {
        Random random = new Random(seed);
        List<NDArray> parameters = new ArrayList<>();
        for (Shape shape : SHAPES) {
            float[] values = new float[(int) shape.size()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) (random.nextGaussian() * 0.1);
            }
            NDArray parameter = manager.create(values, shape);
            parameter.setRequiresGradient(true);
            parameters.add(parameter);
        }
        return parameters;
    }

    /** Zeroes the gradients, then backward of sum(p * r) leaves gradients r: random normals times magnitude. */
    private static void setGradients(List<NDArray> parameters, long seed, double magnitude) {
        GradientClipping.zero(parameters);
        Random random = new Random(seed);
        NDManager manager = parameters.get(0).getManager();
        try (NDManager scratch = manager.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            NDArray total = null;
            for (NDArray parameter : parameters) {
                float[] values = new float[(int) parameter.size()];
                for (int i = 0; i < values.length; i++) {
                    values[i] = (float) (random.nextGaussian() * magnitude);
                }
                NDArray term = parameter.mul(scratch.create(values, parameter.getShape())).sum();
                total = total == null ? term : total.add(term);
            }
            collector.backward(total);
        }
    }

    /** The optimizer step as it was before the flat one: unscale, clip and AdamW array by array. */
    private static final class PerArrayAdamW {
        final List<NDArray> parameters;
        final List<NDArray> firstMoments = new ArrayList<>();
        final List<NDArray> secondMoments = new ArrayList<>();
        final double beta1;
        final double beta2;
        final double eps;
        final double weightDecay;
        long step;

        PerArrayAdamW(List<NDArray> parameters, double beta1, double beta2, double eps, double weightDecay) {
            this.parameters = List.copyOf(parameters);
            this.beta1 = beta1;
            this.beta2 = beta2;
            this.eps = eps;
            this.weightDecay = weightDecay;
            for (NDArray parameter : parameters) {
                firstMoments.add(parameter.zerosLike());
                secondMoments.add(parameter.zerosLike());
            }
        }

        /** The old OptimizerUpdate.apply with a finite loss; returns the grad norm. */
        static double apply(List<NDArray> parameters, double maxGradNorm, PerArrayAdamW optimizer, double lr,
                LossScaler scaler) {
            double scale = scaler.scale();
            if (scale != 1) {
                for (NDArray parameter : parameters) {
                    try (NDArray gradient = parameter.getGradient()) {
                        gradient.muli(1 / scale);
                    }
                }
            }
            double gradNorm = clip(parameters, maxGradNorm);
            boolean finite = Double.isFinite(gradNorm);
            if (scaler.update(finite) && finite) {
                optimizer.step(lr);
            }
            return gradNorm;
        }

        static double clip(List<NDArray> parameters, double maxNorm) {
            NDList totals = new NDList(parameters.size());
            double norm;
            try {
                for (NDArray parameter : parameters) {
                    try (NDArray gradient = parameter.getGradient(); NDArray squares = gradient.square()) {
                        totals.add(squares.sum());
                    }
                }
                float[] sums;
                try (NDArray stacked = NDArrays.stack(totals)) {
                    sums = stacked.toFloatArray();
                }
                double sum = 0;
                for (float arraySum : sums) {
                    sum += arraySum;
                }
                norm = Math.sqrt(sum);
            } finally {
                totals.close();
            }
            double coefficient = maxNorm / (norm + 1e-6);
            if (maxNorm > 0 && coefficient < 1) {
                for (NDArray parameter : parameters) {
                    try (NDArray gradient = parameter.getGradient()) {
                        gradient.muli(coefficient);
                    }
                }
            }
            return norm;
        }

        void step(double lr) {
            step++;
            double biasCorrection1 = 1 - Math.pow(beta1, step);
            double biasCorrection2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
            double stepSize = lr / biasCorrection1;
            for (int i = 0; i < parameters.size(); i++) {
                NDArray parameter = parameters.get(i);
                NDArray m = firstMoments.get(i);
                NDArray v = secondMoments.get(i);
                try (NDArray gradient = parameter.getGradient()) {
                    if (weightDecay != 0) {
                        parameter.muli(1 - lr * weightDecay);
                    }
                    try (NDArray delta = gradient.sub(m)) {
                        m.addi(delta.muli(1 - beta1));
                    }
                    try (NDArray g2 = gradient.square()) {
                        v.muli(beta2).addi(g2.muli(1 - beta2));
                    }
                    try (NDArray denom = v.sqrt(); NDArray update = m.div(denom.divi(biasCorrection2Sqrt).addi(eps))) {
                        parameter.subi(update.muli(stepSize));
                    }
                }
            }
        }
    }
}
