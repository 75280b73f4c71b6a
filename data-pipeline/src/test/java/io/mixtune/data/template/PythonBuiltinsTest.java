package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

/** Python's float texts, as CPython 3 writes them (expected values from repr(), json.dumps() and str([x])). */
class PythonBuiltinsTest {
    /** value, repr(value) == json.dumps(value) for finite values. */
    private static final Object[][] FLOATS = {
        {0.0001, "0.0001"}, {0.00012345, "0.00012345"}, {0.001, "0.001"}, {1e-05, "1e-05"}, {1.5e-7, "1.5e-07"},
        {5e-324, "5e-324"}, {-0.0, "-0.0"}, {1.0, "1.0"}, {100.0, "100.0"}, {0.1 + 0.2, "0.30000000000000004"},
        {1e7, "10000000.0"}, {-1e7, "-10000000.0"}, {12345678.0, "12345678.0"}, {1e15, "1000000000000000.0"},
        {123456789012345.6, "123456789012345.6"}, {9999999999999998.0, "9999999999999998.0"}, {1e16, "1e+16"},
        {1e22, "1e+22"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
    };

    @Test
    void floatsReadAsPythonWritesThem() {
        for (Object[] row : FLOATS) {
            double value = (Double) row[0];
            String python = (String) row[1];
            assertEquals(python, PythonBuiltins.jsonDumps(value, true, null, null, false), "json.dumps(" + python + ")");
            assertEquals("[" + python + "]", PythonBuiltins.str(List.of(value)), "str([" + python + "])");
        }
    }

    @Test
    void infinityAndNanAsJsonAndStrWriteThem() {
        assertEquals("[Infinity, -Infinity, NaN]", PythonBuiltins.jsonDumps(List.of(Double.POSITIVE_INFINITY,
                Double.NEGATIVE_INFINITY, Double.NaN), true, null, null, false));
        assertEquals("[inf, -inf, nan]", PythonBuiltins.str(List.of(Double.POSITIVE_INFINITY,
                Double.NEGATIVE_INFINITY, Double.NaN)));
    }
}
