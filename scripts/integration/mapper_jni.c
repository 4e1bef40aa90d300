/* Mapper.map(path, size): the device mapped MAP_SHARED through libc, as a
 * direct ByteBuffer (the JNI half of Mapper.java). */
#include <fcntl.h>
#include <jni.h>
#include <sys/mman.h>

JNIEXPORT jobject JNICALL Java_Mapper_map(JNIEnv *env, jclass cls, jstring path, jlong size)
{
	const char *p = (*env)->GetStringUTFChars(env, path, NULL);
	int fd = open(p, O_RDWR);
	void *mem = fd < 0 ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	(*env)->ReleaseStringUTFChars(env, path, p);
	return mem == MAP_FAILED ? NULL : (*env)->NewDirectByteBuffer(env, mem, size);
}
