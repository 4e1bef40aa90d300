// A JVM that maps a device through JNI (mapper_jni.c: libc's mmap, so the
// personality maps it directly) and counts at its offset 0 from Java code,
// with the JVM's own SIGBUS handling, which skips a load or store to a
// direct buffer that faults and later raises it as an InternalError ("a
// fault occurred in a recent unsafe memory access", at the next safepoint:
// caught here, as a program that outlives a truncated mapping catches it).
// Prints "ready" once the count runs.
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

public class Mapper {
    static native ByteBuffer map(String path, long size);

    public static void main(String[] args) {
        System.loadLibrary("mapper_jni");
        ByteBuffer mem = map(args[0], 2 << 20).order(ByteOrder.nativeOrder());
        for (long n = 1; ; n++) {
            try {
                mem.putLong(0, mem.getLong(0) + 1);
            } catch (InternalError faulted) {
                continue;
            }
            if (n == 1000) {
                System.out.println("ready");
                System.out.flush();
            }
        }
    }
}
