package io.mixtune.data.template;

import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The role markers of a chat template ({@code <|im_start|>}, {@code <|user|>}...) that the tokenizer does not hold as
 * special tokens: each becomes several text pieces, which the model then learns to spell in every turn (ChatML on a
 * Mistral tokenizer: {@code <|im_start|>} is 7 pieces). Worth a warning, not an error: Zephyr was trained so.
 * Mistral's {@code [INST]} is left out: it is text in the v1 tokenizer by design (mistral-common encodes it so).
 */
public final class TemplateMarkers {
    private static final Pattern MARKER = Pattern.compile("<\\|[A-Za-z0-9_]+\\|>");

    private TemplateMarkers() {}

    /** The warning for {@code template} on {@code tokenizer}, with the pieces per marker; null when there is none. */
    public static String warning(ChatTemplate template, TextTokenizer tokenizer) {
        String jinja = template.jinja();
        if (jinja == null) {
            return null;
        }
        Set<String> markers = new TreeSet<>();
        Matcher matcher = MARKER.matcher(jinja);
        while (matcher.find()) {
            markers.add(matcher.group());
        }
        List<String> split = new ArrayList<>();
        for (String marker : markers) {
            if (!tokenizer.control(marker).equals(marker)) {
                continue; // a special token of this tokenizer: one id
            }
            int pieces = tokenizer.encodeContinuation(marker).length;
            if (pieces > 1) {
                split.add(marker + " " + pieces + " pieces");
            }
        }
        if (split.isEmpty()) {
            return null;
        }
        String name = template instanceof HfChatTemplate hf ? hf.template().name() : template.name();
        return "chat template " + name + ": " + split.size() + " of its " + markers.size() + " markers are not "
                + "special tokens of the tokenizer and become several text pieces (" + String.join(", ", split)
                + "): the model learns to spell them in every turn; a tokenizer.json that declares them special "
                + "(and embeddings for them) makes each one token";
    }
}
