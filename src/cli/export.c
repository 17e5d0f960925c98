/* prepack export: a shard set into another trainer's packed format. The
 * formats are Arrow, Parquet and numpy files, written by the Python
 * package (prepack.export, docs/EXPORT.md) with pyarrow and numpy: this
 * command runs `python -I` on prepack's own command line, so there is
 * one implementation of each format, and checks what it wrote.
 *
 * The child is isolated (issue 26, rule 7): -I puts neither the working
 * directory nor a PYTHON* variable's paths on sys.path, so a prepack.py,
 * numpy.py or sitecustomize.py where the command runs is never imported.
 * The package is then found where it was installed (the interpreter's
 * site-packages), or in PYTHONPATH's absolute entries, which the child's
 * first lines put back (an empty or relative entry would name the
 * working directory). A child that exits 0 has succeeded only when OUT
 * is a directory (not a link) whose .prepack-export lists files that are
 * all there, with their sizes. */
#define _GNU_SOURCE /* getopt_long */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

static const char export_help[] =
    "usage: prepack export SET --to FORMAT -o OUT\n"
    "\n"
    "Write the shard set SET (full or plan-only) as another trainer's packed\n"
    "data in OUT (written in .OUT.prepack-XXXXXX beside it, renamed when\n"
    "complete; OUT must not be a symbolic link):\n"
    "  hf, hf-parquet   a Hugging Face dataset (save_to_disk, or Parquet)\n"
    "                   with TRL's packed columns input_ids, seq_lengths\n"
    "                   and labels, for its padding-free collator\n"
    "  nemo-npy         NeMo 2's training_L.npy (a pickled object array:\n"
    "                   np.load(..., allow_pickle=True)) and L_metadata.jsonl\n"
    "  nemo-parquet     Megatron-Bridge's training_L.idx.parquet\n"
    "                   (input_ids, loss_mask, seq_start_id)\n"
    "See docs/EXPORT.md for each format and the code it was matched to.\n"
    "\n"
    "The formats are written by the Python package (prepack.export, with\n"
    "pyarrow and numpy): this command runs `$PREPACK_PYTHON -I` (default\n"
    "python3), which must import prepack from its site-packages or from an\n"
    "absolute PYTHONPATH entry; never from the working directory.\n"
    "\n"
    "Options:\n"
    "  --to FORMAT      hf | hf-parquet | nemo-npy | nemo-parquet\n"
    "  -o, --output OUT the export's directory (must not hold anything)\n"
    "  --pad-id EOS     nemo-npy, nemo-parquet of a set packed with\n"
    "                   --pad-multiple (required there): the tokenizer's\n"
    "                   EOS id, with which each sequence is padded to the\n"
    "                   multiple as NeMo's packer pads it\n"
    "  -h, --help       show this help\n"
    "\n"
    "Exit status: 0 success, 1 bad input or I/O error, 2 usage error.\n";

/* The child's program (python -I -c): PYTHONPATH's absolute entries
 * (argv[1]) and, outside a venv, the user's own site-packages (under the
 * home directory: PYTHONUSERBASE, which -I does not clear for site's
 * functions, could name the working directory) put back on sys.path,
 * then prepack's command line; a missing package is one line (prepack's
 * own, or an optional one: prepack._optional names the pip extra). */
static const char child_program[] =
    "import os, site, sys\n"
    "sys.path[:0] = [p for p in sys.argv.pop(1).split(os.pathsep)\n"
    "                if os.path.isabs(p)]\n"
    "if sys.prefix == sys.base_prefix:\n"
    "    os.environ.pop('PYTHONUSERBASE', None)\n"
    "    site.USER_BASE = site.USER_SITE = None\n"
    "    user = site.getusersitepackages()\n"
    "    if os.path.isabs(user):\n"
    "        site.addsitedir(user)\n"
    "sys.argv[0] = 'prepack'\n"
    "try:\n"
    "    from prepack.__main__ import main\n"
    "except ImportError as e:\n"
    "    n = (e.name or 'prepack').split('.')[0]\n"
    "    d = 'prepack-tokens' if n == 'prepack' else n\n"
    "    sys.exit(f'prepack export: {sys.executable} cannot import {n} '\n"
    "             f'({e}): pip install {d}')\n"
    "sys.exit(main())\n";

typedef struct export_args {
    const char *set, *to, *out, *pad_id; /* pad_id: NULL when not given */
} export_args;

enum { OPT_TO = 256, OPT_PAD_ID };

static int parse_export_args(int argc, char **argv, export_args *a)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, OPT_TO},
        {"output", required_argument, NULL, 'o'},
        {"pad-id", required_argument, NULL, OPT_PAD_ID},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(export_help, stdout);
            return -1;
        }
        if (opt == '?')
            return usage_error("export", "unknown option '%s'",
                               argv[optind - 1]);
        if (opt == ':')
            return usage_error("export", "option '%s' needs a value",
                               argv[optind - 1]);
        if (opt == OPT_TO)
            a->to = optarg;
        else if (opt == OPT_PAD_ID)
            a->pad_id = optarg; /* python -m prepack checks the number */
        else
            a->out = optarg;
    }
    if (argc - optind != 1 || !a->to || !a->out)
        return usage_error("export", "give one shard set, --to FORMAT and "
                                     "-o OUT");
    a->set = argv[optind];
    return EXIT_OK;
}

/* Runs python on the export and waits: its exit status (1 when it could
 * not be run or was killed, said here; otherwise it said why). */
static int run_child(const char *python, const export_args *a)
{
    const char *path = getenv("PYTHONPATH");
    char *args[] = {(char *)python, "-I", "-c", (char *)child_program,
                    (char *)(path ? path : ""), "export", (char *)a->set,
                    "--to", (char *)a->to, "-o", (char *)a->out,
                    a->pad_id ? "--pad-id" : NULL, (char *)a->pad_id, NULL};
    fflush(NULL);
    pid_t pid;
    int err = posix_spawnp(&pid, python, NULL, NULL, args, environ);
    if (err) {
        fprintf(stderr, "prepack export: cannot run %s: %s (the formats are "
                        "written by the Python package; set PREPACK_PYTHON "
                        "to an interpreter that imports prepack)\n",
                python, strerror(err));
        return EXIT_DATA;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "prepack export: waiting for %s: %s\n", python,
                    strerror(errno));
            return EXIT_DATA;
        }
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == EXIT_USAGE ? EXIT_USAGE
               : WEXITSTATUS(status)             ? EXIT_DATA
                                                 : EXIT_OK;
    fprintf(stderr, "prepack export: %s was killed by signal %d; %s is not "
                    "an export\n",
            python, WTERMSIG(status), a->out);
    return EXIT_DATA;
}

enum { DONE_MAX = 1 << 20 }; /* a listing's bytes: thousands of files */

/* The listing's bytes (NUL-terminated, *buf to free), read through one
 * descriptor opened without following a link; NULL when it cannot be. */
static char *read_listing(int dir, const char **why)
{
    int fd = openat(dir, ".prepack-export", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    *why = "it has no .prepack-export (the list written last)";
    if (fd < 0)
        return NULL;
    *why = ".prepack-export is not a plain file of under 1 MiB";
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < DONE_MAX &&
        (buf = malloc((size_t)st.st_size + 1)) != NULL) {
        ssize_t got = read(fd, buf, (size_t)st.st_size);
        if (got == st.st_size) {
            buf[got] = 0;
        } else {
            free(buf);
            buf = NULL;
            *why = ".prepack-export could not be read whole";
        }
    }
    close(fd);
    return buf;
}

/* One "file SIZE NAME" line: NAME a plain file in dir of SIZE bytes. */
static int file_is_there(int dir, char *line, const char **why)
{
    char *end;
    errno = 0;
    unsigned long long size = strtoull(line + 5, &end, 10);
    const char *name = end + 1;
    struct stat st;
    *why = "a file it lists is missing, not a plain file or not its size";
    if (errno || end == line + 5 || *end != ' ' || !*name ||
        strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    return fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISREG(st.st_mode) && (unsigned long long)st.st_size == size;
}

/* Whether the listing is whole ("prepack-export 1" ... "end"), of the
 * format asked for, and names at least one file, every one there. */
static int listing_holds(int dir, char *text, const char *to,
                         const char **why)
{
    size_t files = 0;
    int ended = 0, format = 0;
    *why = ".prepack-export is not a whole listing";
    if (strncmp(text, "prepack-export 1\n", 17) != 0)
        return 0;
    for (char *line = strtok(text + 17, "\n"); line && !ended;
         line = strtok(NULL, "\n")) {
        if (!strcmp(line, "end"))
            ended = 1;
        else if (!strncmp(line, "format ", 7))
            format = !strcmp(line + 7, to);
        else if (!strncmp(line, "file ", 5) && !file_is_there(dir, line, why))
            return 0;
        files += !strncmp(line, "file ", 5);
    }
    if (!ended || files == 0)
        *why = ".prepack-export is not a whole listing";
    else if (!format)
        *why = ".prepack-export is not of the format asked for";
    return ended && format && files > 0;
}

/* After the child exited 0: OUT is a directory, not a link, holding the
 * complete export; otherwise one line naming the Python that was run. */
static int check_export(const char *python, const export_args *a)
{
    const char *path = a->out; /* dir_path's spelling (cmd_export) */
    const char *why = "it is missing, a symbolic link or not a directory";
    int dir = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    char *text = dir >= 0 ? read_listing(dir, &why) : NULL;
    int ok = text && listing_holds(dir, text, a->to, &why);
    free(text);
    if (dir >= 0)
        close(dir);
    if (ok)
        return EXIT_OK;
    fprintf(stderr, "prepack export: %s exited 0 but %s is not a complete "
                    "export: %s (is PREPACK_PYTHON a Python that imports "
                    "prepack?)\n",
            python, a->out, why);
    return EXIT_DATA;
}

int cmd_export(int argc, char **argv)
{
    export_args a = {0};
    int rc = parse_export_args(argc, argv, &a);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    const char *python = getenv("PREPACK_PYTHON");
    if (!python || !*python)
        python = "python3";
    /* one spelling of OUT for the child and the check: "packed/" and
     * "./packed" name packed, beside which the export is staged */
    char out[4096];
    if (strlen(a.out) >= sizeof out)
        return usage_error("export", "-o: path too long");
    if (!dir_path(a.out, out, sizeof out))
        return usage_error("export", "-o %s: give the directory by a path "
                                     "that names it (not ending in '..')",
                           a.out);
    a.out = out;
    rc = run_child(python, &a);
    return rc == EXIT_OK ? check_export(python, &a) : rc;
}
