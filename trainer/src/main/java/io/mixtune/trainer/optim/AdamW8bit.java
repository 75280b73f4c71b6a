package io.mixtune.trainer.optim;

import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The state and update of bitsandbytes' 8-bit AdamW ({@code bnb.optim.AdamW(optim_bits=8)}, which transformers'
 * Trainer builds for adamw_bnb_8bit, adamw_8bit and paged_adamw_8bit: trainer_optimizer.py
 * _get_bitsandbytes_optimizer), per parameter as bitsandbytes/optim/optimizer.py Optimizer2State.init_state sets it
 * up: a parameter of {@link #MIN_8BIT_SIZE} elements or more keeps each moment as one uint8 code per element into a
 * dynamic quantization map (signed for exp_avg, unsigned for exp_avg_sq: functional.py create_dynamic_map) and one
 * float32 absmax per block of {@link #BLOCK} elements; a smaller one keeps float32 moments and takes the 32-bit
 * update. Both zero at the start (codes 0, absmax 0).
 *
 * <p>The arithmetic is that of bitsandbytes' triton kernels (backends/triton/kernels_optim.py
 * _optimizer_update_2state_8bit_blockwise_triton_kernel and _optimizer_update_2state_32bit_triton_kernel), in float32
 * with their order of operations, so that a golden from those kernels (interop/make_adamw8bit_goldens.py, run on the
 * CPU by triton's interpreter) is met code for code: dequantize (code x block absmax), the moments' EMAs, weight decay
 * on the parameter first, the bias-corrected step, then requantize each block to its new absmax, each value to the
 * nearest code (a tie to the lower). bitsandbytes' CUDA kernel (csrc/kernels.cu kOptimizerStatic8bit2StateBlockwise)
 * differs in float rounding only: it decays the parameter after the step, writes eps as eps x sqrt(bias correction 2)
 * inside the denominator, picks the code by a binary search whose tie goes to the searched pivot, and moves a code that
 * landed on the wrong side of zero back by one.
 *
 * <p>The state lives on the Java heap, not on the device: one byte per moment and element plus 8 bytes per block of
 * 256, as on a GPU; "paged" (paged_adamw_8bit) is how bitsandbytes lets CUDA page such state to host memory, which this
 * already is, so its update is the same.
 */
public final class AdamW8bit {
    /** bitsandbytes' blocksize of the 8-bit blockwise optimizer state (Optimizer2State.init_state). */
    public static final int BLOCK = 256;
    /** Optimizer2State's min_8bit_size default, which transformers leaves: smaller parameters keep fp32 moments. */
    public static final long MIN_8BIT_SIZE = 4096;
    /** The state file a checkpoint holds beside trainer_state.safetensors. */
    public static final String STATE_FILE = "optimizer_8bit.safetensors";

    static final float[] SIGNED_MAP = dynamicMap(true);
    static final float[] UNSIGNED_MAP = dynamicMap(false);

    /** One parameter's moments: codes and absmax (blockwise), or the float32 moments themselves (small ones). */
    static final class Moments {
        final byte[] codes1;
        final byte[] codes2;
        final float[] absmax1;
        final float[] absmax2;
        final float[] state1;
        final float[] state2;

        Moments(long size) {
            int n = Math.toIntExact(size);
            if (size >= MIN_8BIT_SIZE) {
                int blocks = (n + BLOCK - 1) / BLOCK;
                codes1 = new byte[n];
                codes2 = new byte[n];
                absmax1 = new float[blocks];
                absmax2 = new float[blocks];
                state1 = null;
                state2 = null;
            } else {
                codes1 = null;
                codes2 = null;
                absmax1 = null;
                absmax2 = null;
                state1 = new float[n];
                state2 = new float[n];
            }
        }

        boolean blockwise() {
            return codes1 != null;
        }
    }

    private final List<Moments> moments = new ArrayList<>();
    private final double beta1;
    private final double beta2;
    private final double eps;
    private final double weightDecay;

    /** @param sizes the elements of each parameter, in order */
    public AdamW8bit(long[] sizes, double beta1, double beta2, double eps, double weightDecay) {
        for (long size : sizes) {
            moments.add(new Moments(size));
        }
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
    }

    /**
     * Updates parameter {@code index} in place: {@code p} its values, {@code g} its gradient from {@code offset}, at
     * {@code lr} (the parameter group's), the {@code step}-th update (from 1).
     */
    public void update(int index, float[] p, float[] g, int offset, double lr, long step) {
        Moments state = moments.get(index);
        // As triton's interpreter runs the kernels: 1 - beta ** step is taken in double (the caller passes beta ** step,
        // the kernel subtracts it from a constant) and rounded to float32; lr and eps are float32 arguments, and the
        // square roots, quotients and products of those scalars are float32.
        float b1 = (float) beta1;
        float b2 = (float) beta2;
        float oneMinusB1 = (float) (1.0 - beta1);
        float oneMinusB2 = (float) (1.0 - beta2);
        float decay = (float) (1.0 - lr * weightDecay);
        float lrF = (float) lr;
        float epsF = (float) eps;
        float correction1 = (float) (1.0 - Math.pow(beta1, step));
        float correction2 = sqrt((float) (1.0 - Math.pow(beta2, step)));
        if (state.blockwise()) {
            updateBlockwise(state, p, g, offset, lrF / correction1, b1, b2, oneMinusB1, oneMinusB2, epsF, decay,
                    correction2);
        } else {
            // _optimizer_update_2state_32bit_triton_kernel, ADAM.
            float stepSize = -lrF * correction2 / correction1;
            float epsScaled = epsF * correction2;
            float[] s1 = state.state1;
            float[] s2 = state.state2;
            for (int i = 0; i < p.length; i++) {
                float gi = g[offset + i];
                s1[i] = s1[i] * b1 + oneMinusB1 * gi;
                s2[i] = s2[i] * b2 + oneMinusB2 * gi * gi;
                float pi = p[i];
                if (weightDecay > 0) {
                    pi = pi * decay;
                }
                p[i] = pi + stepSize * (s1[i] / (sqrt(s2[i]) + epsScaled));
            }
        }
    }

    /** _optimizer_update_2state_8bit_blockwise_triton_kernel, ADAM, one program per block of 256. */
    private void updateBlockwise(Moments state, float[] p, float[] g, int offset, float stepSize, float b1,
            float b2, float oneMinusB1, float oneMinusB2, float eps, float decay, float correction2Sqrt) {
        int n = p.length;
        float[] s1 = new float[BLOCK];
        float[] s2 = new float[BLOCK];
        for (int block = 0, start = 0; start < n; block++, start += BLOCK) {
            int valid = Math.min(BLOCK, n - start);
            float absmax1 = state.absmax1[block];
            float absmax2 = state.absmax2[block];
            float max1 = 0;
            float max2 = 0;
            for (int j = 0; j < valid; j++) {
                int i = start + j;
                float gi = g[offset + i];
                float m = SIGNED_MAP[state.codes1[i] & 0xff] * absmax1;
                float v = UNSIGNED_MAP[state.codes2[i] & 0xff] * absmax2;
                m = m * b1 + oneMinusB1 * gi;
                v = v * b2 + oneMinusB2 * gi * gi;
                s1[j] = m;
                s2[j] = v;
                float pi = p[i];
                if (weightDecay > 0) {
                    pi *= decay;
                }
                float denom = sqrt(v) / correction2Sqrt + eps;
                p[i] = pi - stepSize * (m / denom);
                // The masked tail of a partial block holds zeros, which leave the block's absmax as it is.
                max1 = Math.max(max1, Math.abs(m));
                max2 = Math.max(max2, Math.abs(v));
            }
            state.absmax1[block] = max1;
            state.absmax2[block] = max2;
            for (int j = 0; j < valid; j++) {
                state.codes1[start + j] = nearestCode(SIGNED_MAP, s1[j] / max1);
                state.codes2[start + j] = nearestCode(UNSIGNED_MAP, s2[j] / max2);
            }
        }
    }

    /**
     * The code of the map entry nearest {@code x} (clamped to [-1, 1]), as kernels_8bit_quant.py
     * quantize_8bit_blockwise_kernel_util finds it: eight halvings of [0, 255] keep code[lower] < x <= code[upper]
     * (or the ends), then the nearer of the two, the lower one on a tie.
     */
    static byte nearestCode(float[] code, float x) {
        float a = Math.max(-1f, Math.min(1f, x));
        int lower = 0;
        int upper = code.length - 1;
        for (int k = 0; k < 8; k++) {
            int pivot = (lower + upper) / 2;
            if (a > code[pivot]) {
                lower = pivot;
            } else {
                upper = pivot;
            }
        }
        float lowerDist = Math.abs(a - code[lower]);
        float upperDist = Math.abs(a - code[upper]);
        return (byte) (lowerDist <= upperDist ? lower : upper);
    }

    private static float sqrt(float x) {
        return (float) Math.sqrt(x); // the correctly rounded float32 square root, as numpy's and CUDA's sqrt_rn
    }

    /**
     * bitsandbytes' dynamic quantization map (functional.py create_dynamic_map, max_exponent_bits 7, total_bits 8):
     * the midpoints of torch.linspace(0.1, 1, 2^i + 1) times 10^(i - 6) for i of 0..6 (2^(i+1) + 1 unsigned), negated
     * too when signed, then 0 and 1, sorted. Read from the float32 values bitsandbytes computes
     * (bnb_dynamic_maps.txt, written by interop/make_adamw8bit_goldens.py): torch.linspace's float32 rounding, vector
     * lanes included, is not worth reproducing.
     */
    static float[] dynamicMap(boolean signed) {
        try (InputStream in = AdamW8bit.class.getResourceAsStream("bnb_dynamic_maps.txt")) {
            List<String> lines = new String(in.readAllBytes(), StandardCharsets.US_ASCII).lines()
                    .filter(line -> !line.startsWith("#")).toList();
            String[] hex = lines.get(signed ? 0 : 1).trim().split(" ");
            float[] map = new float[hex.length];
            for (int i = 0; i < hex.length; i++) {
                map[i] = Float.intBitsToFloat(Integer.parseUnsignedInt(hex[i], 16));
            }
            return map;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Bytes of state per parameter of {@code size} elements: 2 codes + 2 absmax per block, or 2 float32 moments. */
    public static long stateBytes(long size) {
        return size >= MIN_8BIT_SIZE ? 2 * size + 2 * 4 * ((size + BLOCK - 1) / BLOCK) : 2 * 4 * size;
    }

    Moments moments(int index) {
        return moments.get(index);
    }

    /** Writes the state as safetensors: state1.i and state2.i (U8 codes, or F32 moments), absmax1.i and absmax2.i. */
    public void save(Path file) {
        List<TensorSpec> specs = new ArrayList<>();
        for (int i = 0; i < moments.size(); i++) {
            Moments m = moments.get(i);
            if (m.blockwise()) {
                specs.add(new TensorSpec("state1." + i, DType.U8, new long[] {m.codes1.length}));
                specs.add(new TensorSpec("state2." + i, DType.U8, new long[] {m.codes2.length}));
                specs.add(new TensorSpec("absmax1." + i, DType.F32, new long[] {m.absmax1.length}));
                specs.add(new TensorSpec("absmax2." + i, DType.F32, new long[] {m.absmax2.length}));
            } else {
                specs.add(new TensorSpec("state1." + i, DType.F32, new long[] {m.state1.length}));
                specs.add(new TensorSpec("state2." + i, DType.F32, new long[] {m.state2.length}));
            }
        }
        SafetensorsWriter.writeFile(file, specs, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                return (float[]) array(spec.name());
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                return (byte[]) array(spec.name());
            }
        });
    }

    /** Reads what {@link #save} wrote, checking every tensor's dtype and length against this run's parameters. */
    public void restore(Path file) {
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (int i = 0; i < moments.size(); i++) {
                Moments m = moments.get(i);
                if (m.blockwise()) {
                    readBytes(reader, file, "state1." + i, m.codes1);
                    readBytes(reader, file, "state2." + i, m.codes2);
                    readFloats(reader, file, "absmax1." + i, m.absmax1);
                    readFloats(reader, file, "absmax2." + i, m.absmax2);
                } else {
                    readFloats(reader, file, "state1." + i, m.state1);
                    readFloats(reader, file, "state2." + i, m.state2);
                }
            }
        }
    }

    private Object array(String name) {
        int dot = name.indexOf('.');
        Moments m = moments.get(Integer.parseInt(name.substring(dot + 1)));
        return switch (name.substring(0, dot)) {
            case "state1" -> m.blockwise() ? m.codes1 : m.state1;
            case "state2" -> m.blockwise() ? m.codes2 : m.state2;
            case "absmax1" -> m.absmax1;
            case "absmax2" -> m.absmax2;
            default -> throw new IllegalArgumentException(name);
        };
    }

    private static void readBytes(SafetensorsReader reader, Path file, String name, byte[] into) {
        if (!reader.contains(name) || reader.info(name).dtype() != DType.U8
                || reader.info(name).byteLength() != into.length) {
            throw new IllegalArgumentException(file + ": no U8 tensor " + name + " of " + into.length
                    + " codes (was the checkpoint written with another optimizer or adapter?)");
        }
        reader.bytes(name).order(ByteOrder.LITTLE_ENDIAN).get(into);
    }

    private static void readFloats(SafetensorsReader reader, Path file, String name, float[] into) {
        if (!reader.contains(name) || reader.info(name).dtype() != DType.F32
                || reader.info(name).byteLength() != 4L * into.length) {
            throw new IllegalArgumentException(file + ": no F32 tensor " + name + " of " + into.length
                    + " values (was the checkpoint written with another optimizer or adapter?)");
        }
        ByteBuffer bytes = reader.bytes(name).order(ByteOrder.LITTLE_ENDIAN);
        bytes.asFloatBuffer().get(into);
    }
}
