/* hello: the autobot sample program.
 *
 * Prints a friendly greeting, like GNU hello. Options: -g/--greeting TEXT,
 * -v/--version, -h/--help. Its tests live in tests/check.sh.
 */
#include <stdio.h>
#include <string.h>

#define HELLO_VERSION "1.0"

static void usage(FILE *out)
{
    fprintf(out, "Usage: hello [-g TEXT | --greeting=TEXT] [-v] [-h]\n");
}

int main(int argc, char **argv)
{
    const char *greeting = "Hello, world!";
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("hello (autobot sample) %s\n", HELLO_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-g") == 0 && i + 1 < argc) {
            greeting = argv[++i];
        } else if (strncmp(argv[i], "--greeting=", 11) == 0) {
            greeting = argv[i] + 11;
        } else {
            fprintf(stderr, "hello: unrecognized option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    printf("%s\n", greeting);
    return 0;
}
