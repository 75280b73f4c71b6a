package io.mixtune.bench;

import ai.djl.pytorch.jni.JniUtils;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * libtorch's operator profiler around some work (DJL's JniUtils.startProfile / stopProfile, a Chrome trace), and a
 * summary of the trace: per operator its calls and self time (its time minus the operators it called), which says
 * whether a step is spent in arithmetic or in many small calls.
 */
final class OpProfile {
    private OpProfile() {}

    /** Runs {@code work} under the profiler and writes the trace to {@code trace}. */
    static void record(Path trace, Runnable work) {
        record(trace, false, work);
    }

    /** The same, with each operator's input shapes in the trace when {@code shapes} (for finding which calls cost). */
    static void record(Path trace, boolean shapes, Runnable work) {
        JniUtils.startProfile(false, shapes, false);
        try {
            work.run();
        } finally {
            JniUtils.stopProfile(trace.toAbsolutePath().toString());
        }
    }

    /** One operator call from the trace, times in microseconds. */
    private static final class Call {
        final String name;
        final double start;
        final double duration;
        double self;

        Call(String name, double start, double duration) {
            this.name = name;
            this.start = start;
            this.duration = duration;
            this.self = duration;
        }
    }

    /** Prints the trace's operator count and its {@code top} operators by self time. */
    static void summarise(Path trace, String label, int top) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(trace.toFile());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the profiler trace " + trace + ": " + e.getMessage(), e);
        }
        JsonNode events = root.isArray() ? root : root.path("traceEvents");
        Map<String, List<Call>> byThread = new HashMap<>();
        for (JsonNode event : events) {
            if ("X".equals(event.path("ph").asText()) && event.has("dur")) {
                byThread.computeIfAbsent(event.path("tid").asText(), t -> new ArrayList<>())
                        .add(new Call(event.path("name").asText(), event.path("ts").asDouble(),
                                event.path("dur").asDouble()));
            }
        }
        // Self time: an operator that starts inside another is its child (calls nest on one thread).
        Map<String, double[]> perOperator = new HashMap<>(); // name -> {calls, self us}
        double total = 0;
        int calls = 0;
        for (List<Call> thread : byThread.values()) {
            thread.sort(Comparator.comparingDouble((Call c) -> c.start).thenComparingDouble(c -> -c.duration));
            Deque<Call> open = new ArrayDeque<>();
            for (Call call : thread) {
                while (!open.isEmpty() && open.peek().start + open.peek().duration <= call.start) {
                    open.pop();
                }
                if (open.isEmpty()) {
                    total += call.duration;
                } else {
                    open.peek().self -= call.duration;
                }
                open.push(call);
            }
            for (Call call : thread) {
                double[] sums = perOperator.computeIfAbsent(call.name, n -> new double[2]);
                sums[0]++;
                sums[1] += call.self;
                calls++;
            }
        }
        double profiled = total;
        System.out.printf(Locale.ROOT, "%s: one step under libtorch's profiler: %d operator calls, %.1f ms inside "
                + "operators (%.1f us per call on average); top by self time:%n", label, calls, profiled / 1e3,
                profiled / Math.max(1, calls));
        perOperator.entrySet().stream()
                .sorted(Comparator.comparingDouble((Map.Entry<String, double[]> e) -> -e.getValue()[1]))
                .limit(top)
                .forEach(e -> System.out.printf(Locale.ROOT, "  %-40s %5.0f calls %8.2f ms self (%4.1f%%)%n", e.getKey(),
                        e.getValue()[0], e.getValue()[1] / 1e3, 100 * e.getValue()[1] / profiled));
    }
}
