package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.trainer.Training;
import java.nio.file.Files;
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
        for (String value : new String[] {"true", "gaussian", "orthogonal", "pissa", "pissa_niter_4", "olora",
                "loftq"}) {
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
    void aPissaRunOnAnNf4MixtralResumesToTheUninterruptedRunsBytes() throws Exception {
        // --resume recomputes the start from the checkpoint (nothing of it is stored): the residual, NF4-quantized, and
        // A0, B0 come out the same, so the adapter written after the resumed steps is the uninterrupted run's.
        Path out = dir.resolve("pissa");
        String[] sets = {"data.files=[../data/samples/chats.jsonl]", "output_dir=" + out, "train.max_steps=3",
                "data.max_seq_len=48", "train.eval_every=0", "train.save_every=2", "train.keep_last=10",
                "lora.init_lora_weights=pissa", "lora.targets=[q_proj, w1]", "lora.r=4"};
        Training.load(Path.of("../recipes/quickstart.yaml"), sets).run();
        Path adapter = out.resolve("adapter");
        byte[] expected = Files.readAllBytes(adapter.resolve("adapter_model.safetensors"));
        JsonNode config = new ObjectMapper().readTree(adapter.resolve("adapter_config.json").toFile());
        assertEquals(2 * 4, config.get("r").asInt(), "the converted rank 2r");
        Training.load(Path.of("../recipes/quickstart.yaml"), sets).resume(out.resolve("checkpoints/step-000002"))
                .run();
        assertArrayEquals(expected, Files.readAllBytes(adapter.resolve("adapter_model.safetensors")));
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
