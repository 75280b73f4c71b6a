package io.mixtune.merging;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.SerializerProvider;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** {@link ParameterSetting} in YAML, mergekit's three spellings: {@code 0.5}, {@code [0, 0.5, 1]}, {@code [{filter, value}]}. */
final class ParameterSettingYaml {
    private static final String EXPECTED = "expected a number, a list of numbers (a gradient over the layers) or a"
            + " list of {filter: NAME_PART, value: NUMBER_OR_LIST}";

    private ParameterSettingYaml() {}

    static final class Reader extends JsonDeserializer<ParameterSetting> {
        @Override
        public ParameterSetting deserialize(JsonParser parser, DeserializationContext context) throws IOException {
            JsonNode node = context.readTree(parser);
            try {
                return setting(node, true);
            } catch (IllegalArgumentException e) {
                throw JsonMappingException.from(parser, e.getMessage(), e);
            }
        }

        private static ParameterSetting setting(JsonNode node, boolean filtersAllowed) {
            if (node.isNumber()) {
                return new ParameterSetting.Constant(node.asDouble());
            }
            if (!node.isArray() || node.isEmpty()) {
                throw new IllegalArgumentException(EXPECTED + ", got " + node);
            }
            if (allNumbers(node)) {
                List<Double> values = new ArrayList<>();
                node.forEach(v -> values.add(v.asDouble()));
                return new ParameterSetting.Gradient(values);
            }
            if (!filtersAllowed) {
                throw new IllegalArgumentException("a filtered value is a number or a list of numbers, got " + node);
            }
            List<ParameterSetting.Filtered> cases = new ArrayList<>();
            for (JsonNode entry : node) {
                if (!entry.isObject() || !entry.has("value")) {
                    throw new IllegalArgumentException(EXPECTED + ", got " + node);
                }
                for (Map.Entry<String, JsonNode> key : entry.properties()) {
                    if (!key.getKey().equals("filter") && !key.getKey().equals("value")) {
                        throw new IllegalArgumentException("unknown key '" + key.getKey() + "' in a filtered value;"
                                + " valid keys here: filter, value");
                    }
                }
                JsonNode filter = entry.get("filter");
                if (filter != null && !filter.isTextual()) {
                    throw new IllegalArgumentException("filter must be a part of a tensor name, got " + filter);
                }
                cases.add(new ParameterSetting.Filtered(filter == null ? null : filter.asText(),
                        setting(entry.get("value"), false)));
            }
            return new ParameterSetting.Conditional(cases);
        }

        private static boolean allNumbers(JsonNode array) {
            for (JsonNode value : array) {
                if (!value.isNumber()) {
                    return false;
                }
            }
            return true;
        }
    }

    static final class Writer extends JsonSerializer<ParameterSetting> {
        @Override
        public void serialize(ParameterSetting value, JsonGenerator generator, SerializerProvider provider)
                throws IOException {
            provider.defaultSerializeValue(value.yamlValue(), generator);
        }
    }
}
