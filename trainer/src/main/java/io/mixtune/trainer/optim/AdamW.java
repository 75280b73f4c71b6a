package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.InPlaceCopy;
import java.util.ArrayList;
import java.util.List;

/**
 * AdamW as {@code torch.optim.AdamW} computes it (Loshchilov and Hutter 2019): decoupled weight decay applied to the
 * parameter first, moments m and v, bias correction, and eps added outside the square root of the corrected v. DJL's
 * fused adamUpdate places eps differently and clips one-sided, so this is written out in NDArray ops, run outside any
 * gradient collector (PyTorch's no_grad), updating the parameters in place.
 *
 * <p>The parameters are taken in buckets of consecutive arrays of up to {@link #BUCKET_ELEMENTS} elements together (one
 * larger array alone): per bucket the moments are one flat array each and the gradients one flat copy
 * ({@link FlatGradients}), the Adam math runs once over the bucket's elements into a scratch buffer, and the scratch's
 * runs, shaped as the parameters, are subtracted from them. A Mixtral adapter's hundreds of arrays then cost a handful
 * of libtorch calls per bucket plus one or two per array, where the per-array form made some twenty-five per array
 * (each a few microseconds of dispatch, DJL adding a scalar array per scalar argument); buckets bound the temporaries to
 * a few bucket sizes however large the adapter. The operations are the per-array ones, elementwise, so every value has
 * the same bits.
 *
 * <p>Each parameter may carry a factor on the learning rate, as a torch parameter group's own lr scales with the
 * schedule (LambdaLR multiplies each group's initial lr): LoRA+ ({@link LoraPlus}) gives lora_B ratio x lr. A bucket
 * holds parameters of one factor only, and updates at lr x factor; with every factor 1 the buckets and the bits are
 * those of plain AdamW.
 */
public final class AdamW {
    /** 16 MB of float32: the step's temporaries (g - m, g^2, the denominator) are at most this each. */
    static final long BUCKET_ELEMENTS = 1L << 22;

    private final List<NDArray> parameters;
    private final List<Bucket> buckets = new ArrayList<>();
    private final List<NDArray> firstMoments = new ArrayList<>();
    private final List<NDArray> secondMoments = new ArrayList<>();
    private final double beta1;
    private final double beta2;
    private final double eps;
    private final double weightDecay;
    private long step;
    /** bitsandbytes' 8-bit moments (adamw_bnb_8bit), in place of the float32 ones; null for adamw_torch. */
    private final AdamW8bit eightBit;

    /**
     * Consecutive parameters, their flat moments, and their update's place: the first {@code size} elements of the
     * optimizer's scratch buffer (shared by all buckets, which are updated one after the other), viewed per parameter.
     */
    private record Bucket(List<NDArray> parameters, long[] sizes, double lrFactor, NDArray firstMoment,
            NDArray secondMoment, NDArray update, List<NDArray> updates) {}

    public AdamW(List<NDArray> parameters, double beta1, double beta2, double eps, double weightDecay) {
        this(parameters, null, beta1, beta2, eps, weightDecay, BUCKET_ELEMENTS, false);
    }

    /**
     * @param lrFactors per parameter, what its learning rate is of the schedule's (null: 1 for all)
     */
    public AdamW(List<NDArray> parameters, double[] lrFactors, double beta1, double beta2, double eps,
            double weightDecay) {
        this(parameters, lrFactors, beta1, beta2, eps, weightDecay, BUCKET_ELEMENTS, false);
    }

    /**
     * @param eightBitMoments bitsandbytes' 8-bit AdamW ({@link AdamW8bit}: transformers' adamw_bnb_8bit) instead of
     *     torch's: the buckets still lay out the gradients for unscaling and clipping, the moments are AdamW8bit's
     */
    public AdamW(List<NDArray> parameters, double[] lrFactors, double beta1, double beta2, double eps,
            double weightDecay, boolean eightBitMoments) {
        this(parameters, lrFactors, beta1, beta2, eps, weightDecay, BUCKET_ELEMENTS, eightBitMoments);
    }

    /** With buckets of {@code bucketElements}: tests use small ones to have several. */
    AdamW(List<NDArray> parameters, double beta1, double beta2, double eps, double weightDecay, long bucketElements) {
        this(parameters, null, beta1, beta2, eps, weightDecay, bucketElements, false);
    }

    private AdamW(List<NDArray> parameters, double[] lrFactors, double beta1, double beta2, double eps,
            double weightDecay, long bucketElements, boolean eightBitMoments) {
        if (lrFactors != null && lrFactors.length != parameters.size()) {
            throw new IllegalArgumentException(lrFactors.length + " learning-rate factors for " + parameters.size()
                    + " parameters");
        }
        this.parameters = List.copyOf(parameters);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        this.eightBit = eightBitMoments ? new AdamW8bit(this.parameters.stream().mapToLong(NDArray::size).toArray(),
                beta1, beta2, eps, weightDecay) : null;
        List<List<NDArray>> groups = new ArrayList<>();
        List<Double> groupFactors = new ArrayList<>();
        long largest = 0;
        long filled = 0;
        for (int i = 0; i < this.parameters.size(); i++) {
            NDArray parameter = this.parameters.get(i);
            long size = parameter.size();
            double factor = lrFactors == null ? 1 : lrFactors[i];
            if (groups.isEmpty() || filled + size > bucketElements || factor != groupFactors.get(groups.size() - 1)) {
                groups.add(new ArrayList<>());
                groupFactors.add(factor);
                filled = 0;
            }
            groups.get(groups.size() - 1).add(parameter);
            filled += size;
            largest = Math.max(largest, filled);
        }
        if (groups.isEmpty()) {
            return;
        }
        NDArray like = this.parameters.get(0);
        NDManager manager = like.getManager();
        NDArray scratch = manager.zeros(new Shape(largest), like.getDataType(), like.getDevice());
        for (int g = 0; g < groups.size(); g++) {
            List<NDArray> group = groups.get(g);
            List<Shape> shapes = group.stream().map(NDArray::getShape).toList();
            long size = shapes.stream().mapToLong(Shape::size).sum();
            if (eightBit != null) {
                buckets.add(new Bucket(List.copyOf(group), FlatGradients.sizes(group), groupFactors.get(g), null, null,
                        null, List.of()));
                continue;
            }
            NDArray m = manager.zeros(new Shape(size), like.getDataType(), like.getDevice());
            NDArray v = manager.zeros(new Shape(size), like.getDataType(), like.getDevice());
            NDArray update;
            try (NDList parts = FlatGradients.runs(scratch, new long[] {size, largest - size})) {
                update = parts.get(0).reshape(size); // a view of the scratch's first size elements
            }
            buckets.add(new Bucket(List.copyOf(group), FlatGradients.sizes(group), groupFactors.get(g), m, v, update,
                    FlatGradients.views(update, shapes)));
            firstMoments.addAll(FlatGradients.views(m, shapes));
            secondMoments.addAll(FlatGradients.views(v, shapes));
        }
        scratch.close(); // the buckets' views keep its memory
    }

    /**
     * The parameters' gradients now, one flat copy per bucket ({@link FlatGradients#of}), for {@link #step(double,
     * NDList)} and for unscaling and clipping on the way; the caller closes them.
     */
    public NDList flatGradients() {
        NDList gradients = new NDList(buckets.size());
        for (Bucket bucket : buckets) {
            gradients.add(FlatGradients.of(bucket.parameters()));
        }
        return gradients;
    }

    /** The array sizes in each bucket, as {@link FlatGradients} lays out each of {@link #flatGradients()}. */
    public List<long[]> bucketSizes() {
        return buckets.stream().map(Bucket::sizes).toList();
    }

    /** One update with the gradients the parameters hold now. */
    public void step(double lr) {
        try (NDList gradients = flatGradients()) {
            step(lr, gradients);
        }
    }

    /** One update with {@code gradients}, laid out as {@link #flatGradients()} lays them out. */
    public void step(double lr, NDList gradients) {
        step++;
        double biasCorrection1 = 1 - Math.pow(beta1, step);
        double biasCorrection2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
        int index = 0;
        for (int b = 0; b < buckets.size(); b++) {
            Bucket bucket = buckets.get(b);
            double bucketLr = lr * bucket.lrFactor(); // lr itself when the factor is 1
            if (eightBit != null) {
                // On the host: bitsandbytes' update per parameter (its own blocks), back into the parameter.
                float[] flat = gradients.get(b).toFloatArray();
                int offset = 0;
                for (NDArray parameter : bucket.parameters()) {
                    float[] values = parameter.toFloatArray();
                    eightBit.update(index++, values, flat, offset, bucketLr, step);
                    InPlaceCopy.copy(parameter, values);
                    offset += values.length;
                }
                continue;
            }
            update(bucket, gradients.get(b), bucketLr, bucketLr / biasCorrection1, biasCorrection2Sqrt);
        }
    }

    private void update(Bucket bucket, NDArray gradients, double lr, double stepSize, double biasCorrection2Sqrt) {
        NDArray m = bucket.firstMoment();
        NDArray v = bucket.secondMoment();
        // torch: exp_avg.lerp_(grad, 1 - beta1), i.e. m + (1 - beta1) (g - m).
        try (NDArray delta = gradients.sub(m)) {
            m.addi(delta.muli(1 - beta1));
        }
        try (NDArray g2 = gradients.square()) {
            v.muli(beta2).addi(g2.muli(1 - beta2));
        }
        try (NDArray denom = v.sqrt()) {
            denom.divi(biasCorrection2Sqrt).addi(eps);
            // m / denom written into the update's place: a copy of m divided in place, the same quotient.
            bucket.update().set(new NDIndex("..."), m);
            bucket.update().divi(denom).muli(stepSize);
        }
        if (weightDecay != 0) {
            // One scalar array for the bucket. float32 already: libtorch rounds a double scalar to the float32 of the
            // tensor it multiplies before multiplying (a cast per call), the rounding Java's cast makes.
            try (NDArray decay = m.getManager().create((float) (1 - lr * weightDecay))) {
                for (NDArray parameter : bucket.parameters()) {
                    parameter.muli(decay);
                }
            }
        }
        for (int i = 0; i < bucket.parameters().size(); i++) {
            bucket.parameters().get(i).subi(bucket.updates().get(i));
        }
    }

    int bucketCount() {
        return buckets.size();
    }

    /** Updates taken so far (torch's state "step"). */
    public long stepCount() {
        return step;
    }

    /** exp_avg of each parameter, shaped as it: views of the buckets' flat moments. */
    public List<NDArray> firstMoments() {
        return firstMoments;
    }

    /** exp_avg_sq of each parameter, shaped as it: views of the buckets' flat moments. */
    public List<NDArray> secondMoments() {
        return secondMoments;
    }

    /**
     * Restores the step count a checkpoint saved; its moments are written in place into {@link #firstMoments} and
     * {@link #secondMoments}, tensor by tensor.
     */
    public void restoreStepCount(long stepCount) {
        this.step = stepCount;
    }

    /** bitsandbytes' 8-bit state (then {@link #firstMoments} and {@link #secondMoments} are empty), or null. */
    public AdamW8bit eightBitMoments() {
        return eightBit;
    }
}
