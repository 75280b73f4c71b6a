package io.mixtune.lora.nf4;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * An {@link Nf4Tensor} uploaded once into libtorch on the model's device, in the same 4-bit layout (two codes a byte,
 * 8-bit double-quantized absmax, an fp32 scale per 256 of those and the fp32 offset), and dequantized there with
 * libtorch ops, so a GPU never receives a dense weight over PCIe and the Java heap keeps no copy of the codes.
 *
 * <p>The arithmetic is {@link Nf4Tensor#dequantize()}'s, operation for operation, so the result is equal bit for bit:
 * absmax = map[code] * scale (rounded) + offset (rounded), then weight = level[code] * absmax (rounded). Each is one
 * elementwise libtorch kernel, correctly rounded in fp32, with no fused multiply-add between them. DJL's JNI has no
 * bit shifts, so a byte's two nibbles are looked up at once: row b of {@link Codebooks#pairs} holds
 * (level[b >> 4], level[b & 15]), and an embedding lookup of the packed bytes yields the values in order.
 */
public final class Nf4DeviceTensor {
    private final long[] shape;
    private final int count;
    private final Codebooks codebooks;
    /** Packed codes, uint8 [ceil(count / 2)]. */
    private final NDArray packed;
    /** Per-block absmax, fp32 [blocks], when not double quantized, else null. */
    private final NDArray absmax;
    /** Double quantization: uint8 [blocks] codes into the dynamic map, fp32 [ceil(blocks / 256)] scales, fp32 [1]. */
    private final NDArray quantizedAbsmax;
    private final NDArray absmaxScales;
    private final NDArray absmaxOffset;
    private final long storageBytes;

    private Nf4DeviceTensor(Nf4Tensor weight, Codebooks codebooks, NDManager manager) {
        this.shape = weight.shape();
        this.count = weight.count();
        this.codebooks = codebooks;
        this.packed = uint8(manager, weight.packed());
        if (weight.doubleQuantized()) {
            this.absmax = null;
            this.quantizedAbsmax = uint8(manager, weight.quantizedAbsmax());
            this.absmaxScales = manager.create(weight.absmaxScales());
            this.absmaxOffset = manager.create(new float[] {weight.absmaxOffset()});
        } else {
            this.absmax = manager.create(weight.blockAbsmax());
            this.quantizedAbsmax = null;
            this.absmaxScales = null;
            this.absmaxOffset = null;
        }
        this.storageBytes = weight.storageBytes();
    }

    /** Uploads the parts of {@code weight} into arrays of {@code manager}, on its device. */
    public static Nf4DeviceTensor upload(Nf4Tensor weight, Codebooks codebooks, NDManager manager) {
        return new Nf4DeviceTensor(weight, codebooks, manager);
    }

    public long[] shape() {
        return shape.clone();
    }

    public int count() {
        return count;
    }

    /** Bytes the quantized parts take on the device (as {@link Nf4Tensor#storageBytes()}). */
    public long storageBytes() {
        return storageBytes;
    }

    /** The dense weight in {@code type}, shaped as the original, on and attached to {@code manager}. */
    public NDArray dequantize(NDManager manager, DataType type) {
        try (NDManager scratch = manager.newSubManager()) {
            int blocks = Math.toIntExact((count + Nf4Tensor.BLOCK_SIZE - 1) / Nf4Tensor.BLOCK_SIZE);
            NDArray blockAbsmax = absmax != null ? absmax : absmaxOf(scratch, blocks);
            // Two values per byte in order: [ceil(count / 2), 2] -> flat, padded to whole blocks of 64.
            NDArray values = lookup(scratch, packed, codebooks.pairs).reshape(-1);
            long padded = (long) blocks * Nf4Tensor.BLOCK_SIZE;
            values = padTo(scratch, values, padded);
            NDArray perBlock = in(scratch, blockAbsmax.reshape(blocks, 1));
            NDArray weight = in(scratch, values.reshape(blocks, Nf4Tensor.BLOCK_SIZE).mul(perBlock)).reshape(-1);
            if (padded > count) {
                weight = in(scratch, weight.get("0:" + count));
            }
            weight = weight.reshape(new Shape(shape));
            NDArray result = type == DataType.FLOAT32 ? weight : weight.toType(type, false);
            result.attach(manager);
            return result;
        }
    }

    /** map[code] * scale of its 256-block + offset: the fp32 absmax of every block of 64. */
    private NDArray absmaxOf(NDManager scratch, int blocks) {
        int scaleBlocks = Math.toIntExact(absmaxScales.getShape().get(0));
        NDArray mapped = padTo(scratch, lookup(scratch, quantizedAbsmax, codebooks.dynamicMap).reshape(-1),
                (long) scaleBlocks * Nf4Tensor.ABSMAX_BLOCK_SIZE);
        NDArray perScaleBlock = in(scratch, absmaxScales.reshape(scaleBlocks, 1));
        NDArray scaled = in(scratch, mapped.reshape(scaleBlocks, Nf4Tensor.ABSMAX_BLOCK_SIZE).mul(perScaleBlock));
        NDArray shifted = in(scratch, scaled.add(absmaxOffset)).reshape(-1);
        return blocks == shifted.getShape().get(0) ? shifted : in(scratch, shifted.get("0:" + blocks));
    }

    /** table[code] for each uint8 code (int32 indices: half the memory of int64, which embedding also takes). */
    private static NDArray lookup(NDManager scratch, NDArray codes, NDArray table) {
        NDArray indices = in(scratch, codes.toType(DataType.INT32, false));
        return in(scratch, indices.getNDArrayInternal().embedding(indices, table, SparseFormat.DENSE).singletonOrThrow());
    }

    private static NDArray padTo(NDManager scratch, NDArray flat, long length) {
        long missing = length - flat.getShape().get(0);
        if (missing == 0) {
            return flat;
        }
        return in(scratch, NDArrays.concat(new NDList(flat, scratch.zeros(new Shape(missing), flat.getDataType(),
                flat.getDevice()))));
    }

    /** DJL attaches an op's result to its first operand's manager; intermediates belong to the scratch manager. */
    private static NDArray in(NDManager scratch, NDArray array) {
        array.attach(scratch);
        return array;
    }

    private static NDArray uint8(NDManager manager, byte[] bytes) {
        ByteBuffer buffer = ByteBuffer.allocateDirect(bytes.length).order(ByteOrder.nativeOrder());
        buffer.put(bytes).flip();
        return manager.create(buffer, new Shape(bytes.length), DataType.UINT8);
    }

    /**
     * The lookup tables on one device, shared by every weight loaded there: the NF4 levels of each byte's two nibbles
     * [256, 2] and bitsandbytes' signed dynamic map [256, 1].
     */
    public static final class Codebooks {
        final NDArray pairs;
        final NDArray dynamicMap;

        public Codebooks(NDManager manager) {
            float[] levelPairs = new float[256 * 2];
            for (int b = 0; b < 256; b++) {
                levelPairs[2 * b] = Nf4Tensor.LEVELS[b >>> 4];
                levelPairs[2 * b + 1] = Nf4Tensor.LEVELS[b & 0x0F];
            }
            this.pairs = manager.create(levelPairs, new Shape(256, 2));
            this.dynamicMap = manager.create(DynamicMap.SIGNED, new Shape(256, 1));
        }
    }
}
