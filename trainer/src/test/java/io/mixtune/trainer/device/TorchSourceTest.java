package io.mixtune.trainer.device;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Which libtorch DJL 0.35.1 will load for given PYTORCH_* settings, and what is wrong with them. */
class TorchSourceTest {

    @Test
    void bundledCpuLibtorchIsTheDefault() {
        TorchSource source = TorchSource.configured(Map.<String, String>of()::get, false);
        assertEquals(new TorchSource(TorchSource.Kind.BUNDLED_CPU, null, "2.7.1", "cpu"), source);
        assertEquals(List.of(), TorchSource.problems(Map.<String, String>of()::get));
    }

    @Test
    void aLibraryPathWithLibtorchWinsOverTheDownloadSwitch(@TempDir Path dir) throws IOException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "");
        Map<String, String> settings = Map.of("PYTORCH_LIBRARY_PATH", dir.resolve("absent") + ":" + lib,
                "PYTORCH_VERSION", "2.7.1", "PYTORCH_FLAVOR", "cu128");
        assertEquals(new TorchSource(TorchSource.Kind.LIBRARY_PATH, lib.toAbsolutePath(), "2.7.1", "cu128"),
                TorchSource.configured(settings::get, true));
        assertEquals(List.of(), TorchSource.problems(settings::get));
        // naming libtorch.so itself works as in DJL's findLibraryInPath
        assertEquals(lib.toAbsolutePath(), TorchSource.configured(Map.of("PYTORCH_LIBRARY_PATH",
                lib.resolve("libtorch.so").toString())::get, false).libraryDir());
    }

    @Test
    void theDownloadSwitchAsksForTheCu128FlavorTheJniJarCarries() {
        assertEquals(new TorchSource(TorchSource.Kind.DOWNLOAD, null, "2.7.1", "cu128"),
                TorchSource.configured(Map.<String, String>of()::get, true));
        assertEquals("cu126", TorchSource.configured(Map.of("PYTORCH_FLAVOR", "cu126")::get, true).flavor());
    }

    @Test
    void namesWhatStopsALibraryPathFromWorking(@TempDir Path dir) throws IOException {
        List<String> empty = TorchSource.problems(Map.of("PYTORCH_LIBRARY_PATH", dir.toString())::get);
        assertEquals(1, empty.size());
        assertTrue(empty.get(0).contains("holds no libtorch.so"), empty.get(0));
        assertEquals(TorchSource.Kind.BUNDLED_CPU, TorchSource.configured(Map.of("PYTORCH_LIBRARY_PATH",
                dir.toString())::get, false).kind());

        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "");
        Files.writeString(dir.resolve("torch/version.py"), "__all__ = ['__version__']\n__version__ = '2.13.0+cpu'\n");
        List<String> problems = TorchSource.problems(Map.of("PYTORCH_LIBRARY_PATH", lib.toString(),
                "PYTORCH_VERSION", "2.13.0", "PYTORCH_FLAVOR", "cu130")::get);
        assertEquals(3, problems.size(), problems.toString());
        assertTrue(problems.get(0).contains("is pip torch 2.13.0+cpu, not 2.7.1") && problems.get(0).contains(
                "set_stride is not allowed"), problems.get(0));
        assertTrue(problems.get(1).startsWith("PYTORCH_VERSION=2.13.0: DJL 0.35.1's JNI is built for libtorch 2.7.1"),
                problems.get(1));
        assertTrue(problems.get(2).contains("carries JNIs for cpu and cu128 only"), problems.get(2));
        List<String> unset = TorchSource.problems(Map.of("PYTORCH_LIBRARY_PATH", lib.toString())::get);
        assertTrue(unset.get(1).startsWith("PYTORCH_VERSION is not set") && unset.get(2).startsWith(
                "PYTORCH_FLAVOR is not set"), unset.toString());
    }

    /**
     * A JNI built for the folder's torch (bench/gpu/build-jni.sh installs it in DJL's cache as
     * VERSION-FLAVOR-linux-x86_64/0.35.1-libdjl_torch.so, where DJL looks before the jar's) is what DJL loads: no
     * warning about the jar's 2.7.1 JNI then, but one when PYTORCH_VERSION names another torch than the folder's.
     */
    @Test
    void aJniBuiltForTheFoldersTorchIsFoundWhereDjlLooksAndNotWarnedAbout(@TempDir Path dir) throws IOException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "");
        Files.writeString(dir.resolve("torch/version.py"), "__version__ = '2.13.0+cpu'\n");
        Path cache = dir.resolve("cache");
        Map<String, String> settings = Map.of("PYTORCH_LIBRARY_PATH", lib.toString(), "PYTORCH_VERSION", "2.13.0",
                "PYTORCH_FLAVOR", "cpu", "ENGINE_CACHE_DIR", cache.toString());
        assertEquals(null, TorchSource.builtJni(settings::get));
        assertEquals(2, TorchSource.problems(settings::get).size());

        Path jni = Files.createDirectories(cache.resolve("pytorch/2.13.0-cpu-linux-x86_64"))
                .resolve("0.35.1-libdjl_torch.so");
        Files.writeString(jni, "");
        assertEquals(jni, TorchSource.builtJni(settings::get));
        assertEquals(List.of(), TorchSource.problems(settings::get));
        // DJL_CACHE_DIR/pytorch when ENGINE_CACHE_DIR is not set; a JNI in the folder itself comes first
        assertEquals(jni, TorchSource.builtJni(Map.of("PYTORCH_LIBRARY_PATH", lib.toString(), "PYTORCH_VERSION",
                "2.13.0", "PYTORCH_FLAVOR", "cpu", "DJL_CACHE_DIR", cache.toString())::get));
        Path inFolder = Files.writeString(lib.resolve("libdjl_torch.so"), "");
        assertEquals(inFolder, TorchSource.builtJni(settings::get));
        Files.delete(inFolder);

        Files.writeString(dir.resolve("torch/version.py"), "__version__ = '2.11.0+cu130'\n");
        List<String> other = TorchSource.problems(settings::get);
        assertEquals(1, other.size(), other.toString());
        assertTrue(other.get(0).startsWith(lib + " is pip torch 2.11.0+cu130 but PYTORCH_VERSION=2.13.0 selects the "
                + "JNI " + jni), other.get(0));
        // the jar's own version needs no built JNI: PYTORCH_VERSION=2.7.1 never looks for one
        assertEquals(null, TorchSource.builtJni(Map.of("PYTORCH_LIBRARY_PATH", lib.toString(), "PYTORCH_VERSION",
                "2.7.1", "PYTORCH_FLAVOR", "cpu", "ENGINE_CACHE_DIR", cache.toString())::get));
    }

    /**
     * The version and flavor a libtorch folder tells, for PYTORCH_VERSION and PYTORCH_FLAVOR left unset: the
     * version.py texts are those of pip's torch 2.13.0+cpu and 2.14.1+cu130 on this machine, and 2.7.1's cu128 wheel.
     */
    @Test
    void aFolderTellsItsVersionAndFlavor(@TempDir Path dir) throws IOException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        assertEquals(Optional.empty(), TorchSource.identify(lib));
        String common = "from typing import Optional\n\n__all__ = ['__version__', 'debug', 'cuda', 'git_version', "
                + "'hip', 'rocm', 'xpu']\n";
        Files.writeString(dir.resolve("torch/version.py"), common + "__version__ = '2.13.0+cpu'\ndebug = False\n"
                + "cuda: Optional[str] = None\nhip: Optional[str] = None\n");
        assertEquals(Optional.of(new TorchSource.Identity("2.13.0", "cpu")), TorchSource.identify(lib));
        Files.writeString(dir.resolve("torch/version.py"), common + "__version__ = '2.14.1+cu130'\ndebug = False\n"
                + "cuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n");
        assertEquals(Optional.of(new TorchSource.Identity("2.14.1", "cu130")), TorchSource.identify(lib));
        Files.writeString(dir.resolve("torch/version.py"), "__version__ = '2.7.1+cu128'\ncuda = '12.8'\n");
        assertEquals(Optional.of(new TorchSource.Identity("2.7.1", "cu128")), TorchSource.identify(lib));
        // DJL's own cache folders: a download, and the bundled CPU libtorch extracted
        Path download = Files.createDirectories(dir.resolve("pytorch/2.7.1-cu128-linux-x86_64"));
        assertEquals(Optional.of(new TorchSource.Identity("2.7.1", "cu128")), TorchSource.identify(download));
        Path bundled = Files.createDirectories(dir.resolve("pytorch/2.7.1-20250812-cpu-linux-x86_64"));
        assertEquals(Optional.of(new TorchSource.Identity("2.7.1", "cpu")), TorchSource.identify(bundled));
    }

    @Test
    void setupStepsNameBothWays() {
        String steps = GpuSetup.oneLine();
        assertTrue(steps.contains("pip install torch==2.7.1 --index-url https://download.pytorch.org/whl/cu128"), steps);
        assertTrue(steps.contains("export PYTORCH_VERSION=2.7.1 PYTORCH_FLAVOR=cu128"), steps);
        assertTrue(steps.contains("--allow-download") && steps.contains("MIXTUNE_ALLOW_DOWNLOAD=1"), steps);
    }
}
