package io.mixtune.trainer.chat;

import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.TemplateMarkers;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingData;
import java.io.UncheckedIOException;

/** The recipe's chat template checked against its model's tokenizer ({@link TemplateMarkers}), once per command. */
public final class TemplateWarning {
    private TemplateWarning() {}

    /**
     * The warning for the recipe's template, or null: also when the template or tokenizer cannot be had yet, which
     * the command reports in its own words when it gets there.
     */
    public static String of(Recipe recipe) {
        try {
            TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
            ChatTemplate template = recipe.data().chatTemplate(tokenizerFile);
            try (TextTokenizer tokenizer = tokenizerFile.open()) {
                return TemplateMarkers.warning(template, tokenizer);
            }
        } catch (IllegalArgumentException | UncheckedIOException e) {
            return null;
        }
    }
}
