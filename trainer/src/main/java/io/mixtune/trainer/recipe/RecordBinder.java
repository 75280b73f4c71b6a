package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.mixtune.merging.NearestName;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Binds a YAML tree onto records, one key per record component (snake_case of its name), so recipe sections stay plain
 * records. Every error names the file:line the value came from, the dotted key, and what was expected; an unknown key
 * also names the nearest valid one.
 */
final class RecordBinder {
    private final YamlTree tree;

    RecordBinder(YamlTree tree) {
        this.tree = tree;
    }

    <T> T bind(Class<T> type, JsonNode node, String path) {
        if (!type.isRecord()) {
            throw new IllegalArgumentException(type + " is not a record");
        }
        RecordComponent[] components = type.getRecordComponents();
        List<String> keys = Arrays.stream(components).map(c -> snakeCase(c.getName())).toList();
        if (!node.isObject()) {
            throw error(path, "expected a mapping with keys " + keys + ", got " + describe(node));
        }
        Iterator<String> names = node.fieldNames();
        while (names.hasNext()) {
            String key = names.next();
            if (!keys.contains(key)) {
                throw error(join(path, key), "unknown key" + nearest(key, keys) + " (valid keys"
                        + (path.isEmpty() ? "" : " under " + path) + ": " + String.join(", ", keys) + ")");
            }
        }
        Object[] values = new Object[components.length];
        Class<?>[] types = new Class<?>[components.length];
        for (int i = 0; i < components.length; i++) {
            types[i] = components[i].getType();
            JsonNode child = node.get(keys.get(i));
            values[i] = value(components[i].getGenericType(), child, join(path, keys.get(i)));
        }
        try {
            Constructor<T> constructor = type.getDeclaredConstructor(types);
            return constructor.newInstance(values);
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RecipeException recipe) {
                throw recipe;
            }
            if (cause instanceof IllegalArgumentException) {
                String message = cause.getMessage();
                int colon = message.indexOf(": ");
                if (colon > 0 && keys.contains(message.substring(0, colon))) {
                    throw error(join(path, message.substring(0, colon)), message.substring(colon + 2));
                }
                throw error(path, message);
            }
            throw new IllegalStateException(cause);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    private Object value(Type type, JsonNode node, String path) {
        Class<?> raw = type instanceof ParameterizedType p ? (Class<?>) p.getRawType() : (Class<?>) type;
        if (node == null || node.isNull()) {
            if (raw.isPrimitive()) {
                throw error(path, "missing: expected " + expected(raw));
            }
            if (raw == List.class) {
                return List.of();
            }
            if (raw == Map.class) {
                return Map.of();
            }
            return null;
        }
        if (raw == String.class) {
            if (!node.isValueNode() || node.isBoolean()) {
                throw error(path, "expected a string, got " + describe(node));
            }
            return node.asText();
        }
        if (raw == int.class || raw == Integer.class || raw == long.class || raw == Long.class) {
            if (!node.canConvertToLong() || !node.isIntegralNumber()) {
                throw error(path, "expected an integer, got " + describe(node));
            }
            if ((raw == int.class || raw == Integer.class) && !node.canConvertToInt()) {
                throw error(path, "expected an integer below 2^31, got " + node.asText());
            }
            return raw == int.class || raw == Integer.class ? (Object) node.intValue() : (Object) node.longValue();
        }
        if (raw == double.class || raw == Double.class) {
            if (node.isNumber()) {
                return node.doubleValue();
            }
            // YAML 1.1 reads 1e-4 (no dot) as a string; take it as the number the author meant.
            if (node.isTextual()) {
                try {
                    return Double.parseDouble(node.asText().trim());
                } catch (NumberFormatException e) {
                    // fall through
                }
            }
            throw error(path, "expected a number, got " + describe(node));
        }
        if (raw == boolean.class || raw == Boolean.class) {
            if (!node.isBoolean()) {
                throw error(path, "expected true or false, got " + describe(node));
            }
            return node.booleanValue();
        }
        if (raw == List.class) {
            Type element = ((ParameterizedType) type).getActualTypeArguments()[0];
            JsonNode array = node;
            if (!node.isArray()) {
                if (!node.isValueNode()) {
                    throw error(path, "expected a list, got " + describe(node));
                }
                array = new ArrayNode(null, List.of(node)); // a single value stands for a list of one
            }
            List<Object> list = new ArrayList<>();
            for (int i = 0; i < array.size(); i++) {
                list.add(value(element, array.get(i), path + "[" + i + "]"));
            }
            return List.copyOf(list);
        }
        if (raw == Map.class) {
            Type valueType = ((ParameterizedType) type).getActualTypeArguments()[1];
            if (!node.isObject()) {
                throw error(path, "expected a mapping, got " + describe(node));
            }
            Map<String, Object> map = new LinkedHashMap<>();
            node.fields().forEachRemaining(e -> map.put(e.getKey(), value(valueType, e.getValue(), join(path, e.getKey()))));
            return map;
        }
        if (raw.isRecord()) {
            return bind(raw, node, path);
        }
        throw new IllegalStateException("recipes cannot hold a " + type);
    }

    RecipeException error(String path, String message) {
        return new RecipeException(tree.originOf(path) + ": " + path + ": " + message);
    }

    static String snakeCase(String camel) {
        StringBuilder out = new StringBuilder();
        for (char c : camel.toCharArray()) {
            if (Character.isUpperCase(c)) {
                out.append('_').append(Character.toLowerCase(c));
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    private static String join(String path, String key) {
        return path.isEmpty() ? key : path + "." + key;
    }

    private static String expected(Class<?> type) {
        if (type == int.class || type == long.class) {
            return "an integer";
        }
        return type == boolean.class ? "true or false" : "a number";
    }

    private static String describe(JsonNode node) {
        if (node.isObject()) {
            return "a mapping";
        }
        if (node.isArray()) {
            return "a list";
        }
        return node.isTextual() ? "\"" + node.asText() + "\"" : node.toString();
    }

    /** " (did you mean X?)" when a valid key is close to the typed one. */
    static String nearest(String key, List<String> valid) {
        String best = NearestName.nearest(key, valid);
        return best == null ? "" : " (did you mean " + best + "?)";
    }
}
