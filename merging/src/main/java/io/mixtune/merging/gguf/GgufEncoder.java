package io.mixtune.merging.gguf;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * {@link GgufQuants#encode} on several threads: a run of values is cut into as many runs of whole blocks as there are
 * threads, each encoded into its own part of the output, the calling thread taking the last. Blocks are independent
 * (every quantizer reads only its block's values), so the bytes are the same for any number of threads; as
 * llama-quantize splits a tensor's rows among its nthread workers (llama_tensor_quantize_impl), which defaults to
 * the hardware's concurrency. The caller's buffer bounds the memory, as with one thread.
 */
public final class GgufEncoder implements AutoCloseable {
    private final int threads;
    private final ExecutorService pool;

    /** @param threads the encoding threads, at least 1 (1: the calling thread alone, no pool) */
    public GgufEncoder(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("threads " + threads + " is under 1");
        }
        this.threads = threads;
        this.pool = threads == 1 ? null : Executors.newFixedThreadPool(threads - 1, runnable -> {
            Thread thread = new Thread(runnable, "gguf-encode");
            thread.setDaemon(true);
            return thread;
        });
    }

    /** The threads to use by default: the available processors, as llama-quantize's nthread 0 takes them. */
    public static int defaultThreads() {
        return Runtime.getRuntime().availableProcessors();
    }

    public int threads() {
        return threads;
    }

    /** As {@link GgufQuants#encode}: appends {@code count} values from {@code values[from]} as {@code type}. */
    public void encode(float[] values, int from, int count, GgmlType type, ByteBuffer out) {
        inRuns(from, count, type, out, (runFrom, runCount, part) -> GgufQuants.encode(values, runFrom, runCount, type,
                part));
    }

    /**
     * As {@link GgmlWeightedQuants#encode}: the values of {@code part} (whole rows of one tensor) from {@code from},
     * with the importance of their columns, or IQ4 with or without it.
     */
    void encode(float[] part, int from, int count, GgmlType type, ByteBuffer out, GgmlWeightedQuants.Layout layout) {
        inRuns(from, count, type, out, (runFrom, runCount, runOut) -> GgmlWeightedQuants.encode(part, runFrom,
                runCount, type, runOut, layout));
    }

    @FunctionalInterface
    private interface Run {
        void encode(int from, int count, ByteBuffer out);
    }

    /** Cuts {@code count} values into a run of whole blocks per thread, each encoded into its own part of out. */
    private void inRuns(int from, int count, GgmlType type, ByteBuffer out, Run encoder) {
        int blocks = count / type.blockSize();
        int runs = Math.min(threads, blocks);
        if (runs <= 1 || count % type.blockSize() != 0) {
            encoder.encode(from, count, out);
            return;
        }
        int start = out.position();
        int perRun = (blocks + runs - 1) / runs;
        List<Future<?>> started = new ArrayList<>(runs - 1);
        Runnable last = null;
        for (int run = 0, block = 0; block < blocks; run++, block += perRun) {
            int runBlocks = Math.min(perRun, blocks - block);
            int valueFrom = from + block * type.blockSize();
            int valueCount = runBlocks * type.blockSize();
            // a duplicate shares the bytes but not the position, and starts big-endian
            ByteBuffer part = out.duplicate().order(ByteOrder.LITTLE_ENDIAN);
            part.position(start + block * type.typeSize());
            Runnable task = () -> encoder.encode(valueFrom, valueCount, part);
            if (block + perRun >= blocks) {
                last = task;
            } else {
                started.add(pool.submit(task));
            }
        }
        RuntimeException failure = null;
        try {
            last.run();
        } catch (RuntimeException e) {
            failure = e;
        }
        for (Future<?> future : started) {
            try {
                future.get();
            } catch (ExecutionException e) {
                if (failure == null) {
                    failure = e.getCause() instanceof RuntimeException r ? r : new IllegalStateException(e.getCause());
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while encoding", e);
            }
        }
        if (failure != null) {
            throw failure;
        }
        out.position(start + blocks * type.typeSize());
    }

    @Override
    public void close() {
        if (pool != null) {
            pool.shutdownNow();
        }
    }
}
