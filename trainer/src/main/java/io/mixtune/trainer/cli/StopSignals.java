package io.mixtune.trainer.cli;

import java.io.PrintStream;
import java.util.LinkedHashMap;
import java.util.Map;
import sun.misc.Signal;
import sun.misc.SignalHandler;

/**
 * Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption, `kill`) while `mixtune train` runs. Once the steps have
 * begun, the first stops the run after the step in progress, which then writes a checkpoint of that step, so
 * `--resume` continues exactly; a second signal, or one before the first step, stops at once (what is on disk is
 * whole either way: every file is written aside and renamed). Without this the JVM's default exit runs libtorch's
 * static destructors while the step's backward still runs on them, and the process dies of SIGSEGV (measured).
 */
final class StopSignals implements AutoCloseable {
    private static final Map<String, Integer> NUMBERS = Map.of("INT", 2, "TERM", 15);

    private final Map<Signal, SignalHandler> previous = new LinkedHashMap<>();
    private volatile boolean stepsBegan;
    private volatile String received;

    /**
     * @param stop asks the run to stop after its step in progress
     * @param err where the signal is acknowledged
     */
    static StopSignals install(Runnable stop, PrintStream err) {
        StopSignals signals = new StopSignals();
        for (String name : NUMBERS.keySet()) {
            Signal signal = new Signal(name);
            try {
                signals.previous.put(signal, Signal.handle(signal, s -> signals.onSignal(s, stop, err)));
            } catch (IllegalArgumentException e) {
                // the JVM keeps this signal to itself (java -Xrs): its default stands
            }
        }
        return signals;
    }

    private void onSignal(Signal signal, Runnable stop, PrintStream err) {
        int exitCode = 128 + NUMBERS.get(signal.getName());
        if (received != null || !stepsBegan) {
            err.printf("%nmixtune: SIG%s: stopping now%s%n", signal.getName(),
                    stepsBegan ? "; the last checkpoint is whole" : " (no step had begun)");
            err.flush();
            Runtime.getRuntime().halt(exitCode);
        }
        received = signal.getName();
        err.printf("%nmixtune: SIG%s: stopping after the step in progress, with a checkpoint of it (--resume continues "
                + "the run); send it again to stop at once%n", signal.getName());
        err.flush();
        stop.run();
    }

    /** From now on a signal stops the run after its step in progress instead of at once. */
    void stepsBegan() {
        stepsBegan = true;
    }

    /** The signal that stopped the run (INT, TERM), or null. */
    String received() {
        return received;
    }

    /** The shell's code for a process stopped by {@link #received}: 128 + its number. */
    int exitCode() {
        return 128 + NUMBERS.get(received);
    }

    @Override
    public void close() {
        previous.forEach(Signal::handle);
    }
}
