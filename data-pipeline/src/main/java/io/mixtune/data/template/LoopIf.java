package io.mixtune.data.template;

import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.lib.filter.Filter;
import com.hubspot.jinjava.util.ForLoop;
import com.hubspot.jinjava.util.ObjectIterator;
import com.hubspot.jinjava.util.ObjectTruthValue;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * jinja2's loop filter, {@code {% for key, val in tool.items() if key != "return" %}} (Mistral v0.3's tools), which
 * Jinjava ignores: {@link JinjaChatTemplate} rewrites the loop to iterate {@code seq|loop_if(n)}, the items for which
 * condition n holds with the loop's names bound to the item, so that {@code loop.last} and the rest count the kept
 * items as in jinja2.
 */
final class LoopIf implements Filter {
    static final String NAME = "loop_if";

    /** The loop's names, as the template writes them, and its condition, adapted as other expressions are. */
    record Condition(List<String> names, String expression) {}

    private final List<Condition> conditions;

    LoopIf(List<Condition> conditions) {
        this.conditions = conditions;
    }

    @Override
    public String getName() {
        return NAME;
    }

    @Override
    public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
        Condition condition = conditions.get(Integer.parseInt(args[0]));
        List<Object> kept = new ArrayList<>();
        ForLoop items = ObjectIterator.getLoop(var);
        while (items.hasNext()) {
            Object item = items.next();
            try (var scope = interpreter.enterScope()) {
                bind(condition.names(), item, interpreter);
                if (ObjectTruthValue.evaluate(interpreter.resolveELExpression(condition.expression(),
                        interpreter.getLineNumber()))) {
                    kept.add(item);
                }
            }
        }
        return kept;
    }

    /** One name takes the item; several unpack a dict's (key, value) pair or a list, as the for loop does. */
    private static void bind(List<String> names, Object item, JinjavaInterpreter interpreter) {
        if (names.size() == 1) {
            interpreter.getContext().put(names.get(0), item);
            return;
        }
        List<Object> values = new ArrayList<>();
        if (item instanceof Map.Entry<?, ?> entry) {
            values.add(entry.getKey());
            values.add(entry.getValue());
        } else if (item instanceof Iterable<?> iterable) {
            iterable.forEach(values::add);
        }
        for (int i = 0; i < names.size(); i++) {
            interpreter.getContext().put(names.get(i), i < values.size() ? values.get(i) : null);
        }
    }
}
