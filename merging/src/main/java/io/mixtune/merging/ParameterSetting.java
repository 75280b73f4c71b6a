package io.mixtune.merging;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.DoublePredicate;

/**
 * A numeric merge parameter as mergekit's YAML spells it: a number; a gradient, a list of numbers spread evenly over the
 * layers and interpolated linearly between them; or a list of filtered values, the first whose {@code filter} occurs
 * in the tensor's name (or has none, or is {@code *}) giving the value. mergekit evaluates a gradient at
 * t = i / (L - 1) for layer i of L (t = 1 when L = 1) and at t = 0 for the tensors outside the layers (embeddings,
 * final norm, lm_head); see {@link LayerwiseMerge#layerPosition}.
 */
public sealed interface ParameterSetting {
    /** The value for a tensor at layer position t, or null where no filter matches (the next level then decides). */
    Double at(String tensorName, double t);

    /** Whether every number in the setting passes {@code valid}. */
    boolean all(DoublePredicate valid);

    /** The setting as YAML writes it: a number, a list of numbers, or a list of {filter, value} maps. */
    Object yamlValue();

    /** A plain number: the same for every tensor. */
    record Constant(double value) implements ParameterSetting {
        @Override
        public Double at(String tensorName, double t) {
            return value;
        }

        @Override
        public boolean all(DoublePredicate valid) {
            return valid.test(value);
        }

        @Override
        public Object yamlValue() {
            return value;
        }
    }

    /** Values at evenly spaced layer positions 0, 1/(n-1), ..., 1, linear in between. */
    record Gradient(List<Double> values) implements ParameterSetting {
        public Gradient {
            if (values.isEmpty()) {
                throw new IllegalArgumentException("a gradient needs at least one number, got []");
            }
            values = List.copyOf(values);
        }

        @Override
        public Double at(String tensorName, double t) {
            double scaled = t * (values.size() - 1);
            int lower = (int) scaled;
            int upper = Math.min(values.size() - 1, lower + 1);
            double fraction = scaled - lower;
            return (1 - fraction) * values.get(lower) + fraction * values.get(upper);
        }

        @Override
        public boolean all(DoublePredicate valid) {
            return values.stream().allMatch(valid::test);
        }

        @Override
        public Object yamlValue() {
            return values;
        }
    }

    /** A value for the tensors whose name contains {@code filter}; null or "*" matches every tensor. */
    record Filtered(String filter, ParameterSetting value) {
        public Filtered {
            if (value == null || value instanceof Conditional) {
                throw new IllegalArgumentException("a filtered value is a number or a list of numbers");
            }
        }

        boolean matches(String tensorName) {
            return filter == null || filter.equals("*") || tensorName.contains(filter);
        }
    }

    /** Filtered values, tried in order. */
    record Conditional(List<Filtered> cases) implements ParameterSetting {
        public Conditional {
            cases = List.copyOf(cases);
        }

        @Override
        public Double at(String tensorName, double t) {
            for (Filtered c : cases) {
                if (c.matches(tensorName)) {
                    return c.value().at(tensorName, t);
                }
            }
            return null;
        }

        @Override
        public boolean all(DoublePredicate valid) {
            return cases.stream().allMatch(c -> c.value().all(valid));
        }

        @Override
        public Object yamlValue() {
            return cases.stream().map(c -> {
                Map<String, Object> entry = new LinkedHashMap<>();
                if (c.filter() != null) {
                    entry.put("filter", c.filter());
                }
                entry.put("value", c.value().yamlValue());
                return entry;
            }).toList();
        }
    }

    /**
     * A slice's setting over the method-wide one (mergekit's ConfigReader): the first's value where it has one for the
     * tensor, else the second's. Only a slice's view of the config holds one; the written config keeps the two apart.
     */
    record Layered(ParameterSetting first, ParameterSetting then) implements ParameterSetting {
        @Override
        public Double at(String tensorName, double t) {
            Double value = first.at(tensorName, t);
            return value != null ? value : then.at(tensorName, t);
        }

        @Override
        public boolean all(DoublePredicate valid) {
            return first.all(valid) && then.all(valid);
        }

        @Override
        public Object yamlValue() {
            return List.of(first.yamlValue(), then.yamlValue());
        }
    }

    /** {@code first} over {@code then}, either of which may be null. */
    static ParameterSetting layered(ParameterSetting first, ParameterSetting then) {
        return first == null ? then : then == null ? first : new Layered(first, then);
    }

    static ParameterSetting of(Double value) {
        return value == null ? null : new Constant(value);
    }

    /** Whether the setting gives one value to every tensor. */
    default boolean isConstant() {
        return this instanceof Constant;
    }
}
