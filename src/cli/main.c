/* prepack: the command-line tool. Dispatches to one file per subcommand. */
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: prepack COMMAND [OPTIONS]\n"
    "\n"
    "Pack variable-length token sequences into fixed-length rows.\n"
    "\n"
    "Commands:\n"
    "  stats    plan rows for tokenized inputs (or a file of lengths) and\n"
    "           report the padding that packing removes\n"
    "  pack     pack tokenized inputs into a shard set of rows with varlen\n"
    "           attention metadata\n"
    "  verify   check a shard set (and, given its inputs, every token)\n"
    "  inspect  show a shard set's summary or one row\n"
    "  export   write a shard set as TRL's, NeMo's or Megatron-Bridge's\n"
    "           packed data (through the Python package)\n"
    "  scan, plan, write, finalize\n"
    "           pack in steps, on many machines (Slurm, Ray): byte-\n"
    "           identical to pack ('prepack scan --help')\n"
    "\n"
    "Options:\n"
    "  -h, --help       show this help\n"
    "  -V, --version    show the version\n"
    "\n"
    "'prepack COMMAND --help' lists a command's options.\n"
    "Exit status: 0 success, 1 data error (bad input, I/O), 2 usage error.\n";

typedef int (*command_fn)(int argc, char **argv);

static command_fn find_command(const char *name)
{
    static const struct {
        const char *name;
        command_fn run;
    } commands[] = {{"stats", cmd_stats},   {"pack", cmd_pack},
                    {"verify", cmd_verify}, {"inspect", cmd_inspect},
                    {"export", cmd_export}, {"scan", cmd_step},
                    {"plan", cmd_step},     {"write", cmd_step},
                    {"finalize", cmd_step}};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(name, commands[i].name))
            return commands[i].run;
    return NULL;
}

/* One argument for a shell: as it is, or single-quoted when it holds
 * anything but letters, digits and -_./=:,+@% . */
static void print_shell_word(const char *arg)
{
    if (*arg && strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"
                            "TUVWXYZ0123456789-_./=:,+@%") == strlen(arg)) {
        fputs(arg, stderr);
        return;
    }
    fputc('\'', stderr);
    for (const char *c = arg; *c; c++) {
        if (*c == '\'')
            fputs("'\\''", stderr); /* close, an escaped quote, reopen */
        else
            fputc(*c, stderr);
    }
    fputc('\'', stderr);
}

/* pack, stats or a step with --tokenizer: text is tokenized by the Python
 * package
 * (prepack.text, Hugging Face tokenizers), so say exactly what to run. */
static int text_runs_in_python(int argc, char **argv)
{
    const char *runs[] = {"pack",  "stats", "scan",
                          "plan",  "write", "finalize"};
    int known = 0;
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++)
        known |= !strcmp(argv[1], runs[i]);
    if (!known)
        return 0;
    int text = 0;
    for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
        text |= !strcmp(argv[i], "--tokenizer") ||
                !strncmp(argv[i], "--tokenizer=", 12);
    if (!text)
        return 0;
    fprintf(stderr, "prepack %s: text is tokenized by the Python package "
                    "(prepack.text); run:\n  python3 -m prepack", argv[1]);
    for (int i = 1; i < argc; i++) {
        fputc(' ', stderr);
        print_shell_word(argv[i]);
    }
    fputc('\n', stderr);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") && argc > 2) { /* prepack help pack */
        char help[] = "--help";
        char *args[] = {argv[2], help, NULL};
        if (find_command(argv[2]))
            return find_command(argv[2])(2, args);
        fprintf(stderr, "prepack: no command '%s'\n%s", argv[2], usage_text);
        return EXIT_USAGE;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("prepack %s (zstd %s, msgpack-c %s, simdjson %s, xxhash %s)\n",
               prepack_version(), prepack_dependency_version("zstd"),
               prepack_dependency_version("msgpack-c"),
               prepack_dependency_version("simdjson"),
               prepack_dependency_version("xxhash"));
        return EXIT_OK;
    }
    if (text_runs_in_python(argc, argv))
        return EXIT_USAGE;
    if (find_command(cmd))
        return find_command(cmd)(argc - 1, argv + 1);
    fprintf(stderr, "prepack: unknown command '%s'\n%s", cmd, usage_text);
    return EXIT_USAGE;
}
