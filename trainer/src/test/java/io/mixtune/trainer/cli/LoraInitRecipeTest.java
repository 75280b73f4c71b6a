package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * lora.init_lora_weights (PEFT's init_lora_weights) in a recipe: PEFT's values mixtune runs pass validate, the others
 * are refused by name with what is missing, and PiSSA/OLoRA are refused where the base with the adapter off is a
 * reference model (it would be the residual), with DoRA (PEFT's conversion drops the magnitude) and beside
 * model.adapter.
 */
class LoraInitRecipeTest {
    @TempDir
    Path dir;

    private MixtuneCliTest.Result validate(String recipe, String... sets) {
        String[] args = new String[5 + 2 * sets.length];
        args[0] = "validate";
        args[1] = "--recipe";
        args[2] = recipe;
        for (int i = 0; i < sets.length; i++) {
            args[3 + 2 * i] = "--set";
            args[4 + 2 * i] = sets[i];
        }
        args[args.length - 1] = "output_dir=" + dir.resolve("out");
        args[args.length - 2] = "--set";
        return MixtuneCliTest.run(args);
    }

    @Test
    void peftsInitialisationsPassAndTheOthersAreRefusedByName() {
        for (String value : new String[] {"true", "gaussian", "pissa", "pissa_niter_4", "olora", "loftq"}) {
            MixtuneCliTest.Result result = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=" + value);
            assertEquals(0, result.code(), value + ": " + result.err());
        }
        MixtuneCliTest.Result corda = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=corda");
        assertEquals(2, corda.code(), corda.err());
        assertTrue(corda.err().contains("lora.init_lora_weights: \"corda\" is not offered: CorDA needs"), corda.err());
        MixtuneCliTest.Result off = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=false");
        assertEquals(2, off.code(), off.err());
        assertTrue(off.err().contains("init-adapter --init random"), off.err());
    }

    @Test
    void loftqNeedsAnNf4BaseAndRunsItsOneShotOnly() {
        MixtuneCliTest.Result nf4 = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=loftq",
                "model.quantize=nf4");
        assertEquals(0, nf4.code(), nf4.err());
        MixtuneCliTest.Result none = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=loftq",
                "model.quantize=none");
        assertEquals(2, none.code(), none.err());
        assertTrue(none.err().contains("lora.init_lora_weights: is loftq, which starts the adapter from the NF4 "
                + "quantisation error"), none.err());
        MixtuneCliTest.Result iterations = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=loftq",
                "model.quantize=nf4", "lora.loftq_iter=2");
        assertEquals(2, iterations.code(), iterations.err());
        assertTrue(iterations.err().contains("lora.loftq_iter: 2: mixtune runs LoftQ's one-shot"), iterations.err());
    }

    @Test
    void pissaIsRefusedWhereTheBaseIsTheReferenceAndWithDora() {
        MixtuneCliTest.Result dpo = validate("../recipes/quickstart-dpo.yaml", "lora.init_lora_weights=pissa");
        assertEquals(2, dpo.code(), dpo.err());
        assertTrue(dpo.err().contains("lora.init_lora_weights: is pissa, which takes the adapter's start out of the "
                + "base weights, and train.method dpo"), dpo.err());
        MixtuneCliTest.Result dora = validate("../recipes/quickstart.yaml", "lora.init_lora_weights=olora",
                "lora.use_dora=true");
        assertEquals(2, dora.code(), dora.err());
        assertTrue(dora.err().contains("olora with use_dora cannot be written as a plain LoRA adapter"), dora.err());
    }
}
