/*
 * conf - the SAMPLE tree's kconfig (toa-kernel sample tree, not a kernel).
 *
 * A small re-implementation of the behaviour of the 2.6.32 kernel's
 * scripts/kconfig/conf for the two modes the pipeline uses:
 *
 *   conf -s arch/x86/Kconfig   (make silentoldconfig)
 *   conf -o arch/x86/Kconfig   (make oldconfig)
 *
 * It reads the Kconfig files (config/menuconfig, bool/tristate/string/int/hex,
 * prompt, default/def_bool/def_tristate [if], depends on, menu/endmenu,
 * if/endif, comment, source, option modules, help), reads .config and:
 *   - drops options that no Kconfig file declares;
 *   - resolves duplicates last-wins, warning "override: reassigning to symbol";
 *   - drops values of options whose dependencies are not met;
 *   - asks for NEW visible options (reads stdin; with -s it aborts when
 *     stdin/stdout/stderr are not all terminals, as the real one does);
 *   - rewrites .config (old one kept as .config.old): -s when anything
 *     changed, -o always;
 *   - with -s, writes include/config/auto.conf, include/config/auto.conf.cmd
 *     and include/linux/autoconf.h.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum tri { no, mod, yes };
enum type { T_UNKNOWN, T_BOOL, T_TRISTATE, T_STRING, T_INT, T_HEX };
enum eop { E_SYM, E_CONST, E_NOT, E_AND, E_OR, E_EQ, E_NEQ };

struct symbol;

struct expr {
	enum eop op;
	struct expr *l, *r;
	struct symbol *sym;
	char *str;
};

struct defprop {
	struct expr *value;
	struct expr *cond;
	struct defprop *next;
};

struct menu;

struct symbol {
	char *name;
	enum type type;
	char *prompt;
	struct expr *prompt_cond;
	int has_help;
	struct expr *dep;
	struct defprop *defaults;
	int is_modules;
	struct menu *menu;
	struct symbol *next;
	/* value from .config (or an answer) */
	int has_user;
	enum tri user_tri;
	char *user_str;
	/* calculated */
	int calc_state;
	enum tri cur_tri;
	const char *cur_str;
	enum tri visible;
	int write;
};

struct menu {
	struct symbol *sym;
	char *prompt;
	int is_comment;
	struct expr *dep;
	struct menu *parent, *list, *next, **tail;
};

/* every entry directly under menu m, in Kconfig order */
#define for_each_child(c, m) for ((c) = (m)->list; (c); (c) = (c)->next)

static struct symbol *symbols;
static struct symbol *modules_sym;
static struct menu rootmenu;
static char *kconfig_files[256];
static int n_kconfig_files;
static int changed;
static int warnings;
static int silent_sync;
static int have_terminal = 1;	/* stdin, stdout and stderr are ttys */
static int asked;

static const char *cur_file;
static int cur_line;

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n);

	if (!p) {
		fprintf(stderr, "conf: out of memory\n");
		exit(1);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = xmalloc(strlen(s) + 1);

	strcpy(p, s);
	return p;
}

static void zconf_error(const char *fmt, ...)
{
	char text[512];
	va_list args;

	va_start(args, fmt);
	vsnprintf(text, sizeof(text), fmt, args);
	va_end(args);
	fprintf(stderr, "%s:%d: %s\n", cur_file, cur_line, text);
	exit(1);
}

static struct symbol *sym_find(const char *name)
{
	struct symbol *s;

	for (s = symbols; s; s = s->next)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static struct symbol *sym_lookup(const char *name)
{
	struct symbol *s = sym_find(name);
	struct symbol **pp;

	if (s)
		return s;
	s = xmalloc(sizeof(*s));
	s->name = xstrdup(name);
	for (pp = &symbols; *pp; pp = &(*pp)->next)
		;
	*pp = s;
	return s;
}

/* ---------------------------------------------------------------- lexer */

static const char *lp;

static void skip_space(void)
{
	while (*lp == ' ' || *lp == '\t')
		lp++;
}

static int at_end(void)
{
	skip_space();
	return *lp == 0 || *lp == '\n' || *lp == '#';
}

static char *read_word(void)
{
	const char *start;
	char *w;

	skip_space();
	start = lp;
	while (*lp && (isalnum((unsigned char)*lp) || *lp == '_' || *lp == '-' ||
		       *lp == '.' || *lp == '/'))
		lp++;
	if (lp == start)
		return NULL;
	w = xmalloc(lp - start + 1);
	memcpy(w, start, lp - start);
	return w;
}

static char *read_string(void)
{
	char quote, *out, *o;

	skip_space();
	if (*lp != '"' && *lp != '\'')
		return NULL;
	quote = *lp++;
	out = o = xmalloc(strlen(lp) + 1);
	while (*lp && *lp != quote && *lp != '\n') {
		if (*lp == '\\' && lp[1])
			lp++;
		*o++ = *lp++;
	}
	if (*lp != quote)
		zconf_error("unterminated string");
	lp++;
	return out;
}

static int valid_number(const char *p, int hex);

/* ------------------------------------------------------------ expressions */

static struct expr *expr_new(enum eop op, struct expr *l, struct expr *r)
{
	struct expr *e = xmalloc(sizeof(*e));

	e->op = op;
	e->l = l;
	e->r = r;
	return e;
}

static struct expr *parse_or(void);

static struct expr *parse_primary(void)
{
	struct expr *e;
	char *w;

	skip_space();
	if (*lp == '(') {
		lp++;
		e = parse_or();
		skip_space();
		if (*lp != ')')
			zconf_error("syntax error: missing ')'");
		lp++;
		return e;
	}
	if (*lp == '"' || *lp == '\'') {
		e = expr_new(E_CONST, NULL, NULL);
		e->str = read_string();
		return e;
	}
	w = read_word();
	if (!w)
		zconf_error("syntax error in expression");
	if (!strcmp(w, "y") || !strcmp(w, "n") || !strcmp(w, "m") ||
	    valid_number(w, 0) || (!strncmp(w, "0x", 2) && valid_number(w, 1))) {
		e = expr_new(E_CONST, NULL, NULL);
		e->str = w;
		return e;
	}
	e = expr_new(E_SYM, NULL, NULL);
	e->sym = sym_lookup(w);
	return e;
}

static struct expr *parse_cmp(void)
{
	struct expr *l = parse_primary();

	skip_space();
	if (lp[0] == '!' && lp[1] == '=') {
		lp += 2;
		return expr_new(E_NEQ, l, parse_primary());
	}
	if (lp[0] == '=') {
		lp++;
		return expr_new(E_EQ, l, parse_primary());
	}
	return l;
}

static struct expr *parse_not(void)
{
	skip_space();
	if (lp[0] == '!' && lp[1] != '=') {
		lp++;
		return expr_new(E_NOT, parse_not(), NULL);
	}
	return parse_cmp();
}

static struct expr *parse_and(void)
{
	struct expr *e = parse_not();

	for (;;) {
		skip_space();
		if (lp[0] != '&' || lp[1] != '&')
			return e;
		lp += 2;
		e = expr_new(E_AND, e, parse_not());
	}
}

static struct expr *parse_or(void)
{
	struct expr *e = parse_and();

	for (;;) {
		skip_space();
		if (lp[0] != '|' || lp[1] != '|')
			return e;
		lp += 2;
		e = expr_new(E_OR, e, parse_and());
	}
}

static struct expr *expr_and(struct expr *a, struct expr *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return expr_new(E_AND, a, b);
}

/* ------------------------------------------------------------- values */

static void sym_calc(struct symbol *sym);

static enum tri tri_min(enum tri a, enum tri b) { return a < b ? a : b; }
static enum tri tri_max(enum tri a, enum tri b) { return a > b ? a : b; }

static enum tri const_tri(const char *s)
{
	if (!strcmp(s, "y"))
		return yes;
	if (!strcmp(s, "m"))
		return mod;
	return no;
}

static const char *expr_string(struct expr *e)
{
	if (e->op == E_CONST)
		return e->str;
	if (e->op == E_SYM) {
		sym_calc(e->sym);
		return e->sym->cur_str;
	}
	return "";
}

static enum tri expr_calc(struct expr *e)
{
	if (!e)
		return yes;
	switch (e->op) {
	case E_CONST:
		return const_tri(e->str);
	case E_SYM:
		sym_calc(e->sym);
		if (e->sym->type == T_BOOL || e->sym->type == T_TRISTATE)
			return e->sym->cur_tri;
		return no;
	case E_NOT:
		return 2 - expr_calc(e->l);
	case E_AND:
		return tri_min(expr_calc(e->l), expr_calc(e->r));
	case E_OR:
		return tri_max(expr_calc(e->l), expr_calc(e->r));
	case E_EQ:
		return strcmp(expr_string(e->l), expr_string(e->r)) ? no : yes;
	case E_NEQ:
		return strcmp(expr_string(e->l), expr_string(e->r)) ? yes : no;
	}
	return no;
}

static enum type sym_type(struct symbol *sym)
{
	if (sym->type == T_TRISTATE && modules_sym && sym != modules_sym) {
		sym_calc(modules_sym);
		if (modules_sym->cur_tri == no)
			return T_BOOL;
	}
	return sym->type;
}

static const char *tri_str(enum tri t)
{
	return t == yes ? "y" : t == mod ? "m" : "n";
}

static void sym_calc(struct symbol *sym)
{
	struct defprop *d;
	enum tri dep, v;
	enum type type;

	if (sym->calc_state == 2)
		return;
	if (sym->calc_state == 1) {
		fprintf(stderr, "conf: recursive dependency on symbol %s\n", sym->name);
		exit(1);
	}
	sym->calc_state = 1;
	type = sym_type(sym);
	dep = expr_calc(sym->dep);
	sym->visible = sym->prompt ? tri_min(dep, expr_calc(sym->prompt_cond)) : no;
	if (sym->visible == mod && type != T_TRISTATE)
		sym->visible = yes;
	sym->write = 0;
	sym->cur_tri = no;
	sym->cur_str = "";
	if (type == T_BOOL || type == T_TRISTATE) {
		v = no;
		if (no != sym->visible) {
			sym->write = 1;
		}
		if (sym->visible != no && sym->has_user) {
			v = tri_min(sym->user_tri, sym->visible);
		} else {
			for (d = sym->defaults; d; d = d->next) {
				enum tri cond = tri_min(expr_calc(d->cond), dep);

				if (cond == no)
					continue;
				sym->write = 1;
				v = tri_min(expr_calc(d->value), cond);
				break;
			}
		}
		if (v == mod && type == T_BOOL)
			v = yes;
		sym->cur_tri = v;
		sym->cur_str = tri_str(v);
	} else if (type != T_UNKNOWN) {
		if (sym->visible != no)
			sym->write = 1;
		if (sym->visible != no && sym->has_user) {
			sym->cur_str = sym->user_str;
		} else {
			for (d = sym->defaults; d; d = d->next) {
				if (tri_min(expr_calc(d->cond), dep) == no)
					continue;
				sym->write = 1;
				sym->cur_str = expr_string(d->value);
				break;
			}
		}
	}
	sym->calc_state = 2;
}

static void sym_clear_all(void)
{
	struct symbol *s;

	for (s = symbols; s; s = s->next)
		s->calc_state = 0;
}

static void sym_calc_all(void)
{
	struct symbol *s;

	sym_clear_all();
	for (s = symbols; s; s = s->next)
		sym_calc(s);
}

/* ------------------------------------------------------------- parser */

#define MAX_DEPTH 32

static struct menu *menu_add(struct menu *parent)
{
	struct menu *m = xmalloc(sizeof(*m));

	m->parent = parent;
	m->tail = &m->list;
	*parent->tail = m;
	parent->tail = &m->next;
	return m;
}

static void read_kconfig(const char *name, struct menu *parent, struct expr *dep);

static void read_prompt(struct symbol *sym)
{
	char *p = read_string();

	if (!p)
		return;
	sym->prompt = p;
	skip_space();
	if (!strncmp(lp, "if", 2) && isspace((unsigned char)lp[2])) {
		lp += 2;
		sym->prompt_cond = parse_or();
	}
}

static int indent_of(const char *s)
{
	int n = 0;

	for (; *s == ' ' || *s == '\t'; s++)
		n = *s == '\t' ? (n + 8) & ~7 : n + 1;
	return n;
}

static int blank(const char *s)
{
	for (; *s; s++)
		if (!isspace((unsigned char)*s))
			return 0;
	return 1;
}

static enum type type_of(const char *w)
{
	if (!strcmp(w, "bool") || !strcmp(w, "boolean") || !strcmp(w, "def_bool"))
		return T_BOOL;
	if (!strcmp(w, "tristate") || !strcmp(w, "def_tristate"))
		return T_TRISTATE;
	if (!strcmp(w, "string"))
		return T_STRING;
	if (!strcmp(w, "int"))
		return T_INT;
	if (!strcmp(w, "hex"))
		return T_HEX;
	return T_UNKNOWN;
}

static void add_default(struct symbol *sym, struct expr *value)
{
	struct defprop *d = xmalloc(sizeof(*d)), **pp;

	d->value = value;
	skip_space();
	if (!strncmp(lp, "if", 2) && isspace((unsigned char)lp[2])) {
		lp += 2;
		d->cond = parse_or();
	}
	for (pp = &sym->defaults; *pp; pp = &(*pp)->next)
		;
	*pp = d;
}

static void read_kconfig(const char *name, struct menu *parent, struct expr *dep)
{
	FILE *in;
	char line[1024];
	const char *saved_file = cur_file;
	int saved_line = cur_line;
	struct menu *stack[MAX_DEPTH];
	struct expr *dstack[MAX_DEPTH];
	int is_if[MAX_DEPTH];
	int depth = 0;
	struct menu *cur = NULL;	/* entry receiving attributes */
	struct symbol *sym = NULL;
	int help_indent = -1, in_help = 0;

	in = fopen(name, "r");
	if (!in) {
		if (cur_file)
			zconf_error("can't open file \"%s\"", name);
		fprintf(stderr, "can't find file %s\n", name);
		exit(1);
	}
	if (n_kconfig_files < 256)
		kconfig_files[n_kconfig_files++] = xstrdup(name);
	cur_file = xstrdup(name);
	cur_line = 0;
	stack[0] = parent;
	dstack[0] = dep;
	is_if[0] = 0;

	for (; fgets(line, sizeof(line), in); ) {
		char *w;

		cur_line++;
		if (in_help) {
			if (blank(line))
				continue;
			if (help_indent < 0)
				help_indent = indent_of(line);
			if (indent_of(line) >= help_indent && help_indent > 0)
				continue;
			in_help = 0;
		}
		lp = line;
		if (at_end())
			continue;
		w = read_word();
		if (!w)
			zconf_error("syntax error");
		if (!strcmp(w, "---help---"))
			w = "help";

		if (!strcmp(w, "mainmenu")) {
			rootmenu.prompt = read_string();
		} else if (!strcmp(w, "source")) {
			char *path = read_string();

			if (!path)
				path = read_word();
			if (!path)
				zconf_error("syntax error: source needs a file name");
			if (!at_end())
				zconf_error("syntax error near \"%s\"", lp);
			read_kconfig(path, stack[depth], dstack[depth]);
			lp = "";
			cur = NULL;
			sym = NULL;
		} else if (!strcmp(w, "config") || !strcmp(w, "menuconfig")) {
			char *nm = read_word();

			if (!nm)
				zconf_error("syntax error: config needs a name");
			sym = sym_lookup(nm);
			if (sym->menu)
				zconf_error("symbol %s declared twice", nm);
			cur = menu_add(stack[depth]);
			cur->sym = sym;
			cur->dep = dstack[depth];
			sym->menu = cur;
			sym->dep = dstack[depth];
		} else if (!strcmp(w, "menu") || !strcmp(w, "comment")) {
			cur = menu_add(stack[depth]);
			cur->prompt = read_string();
			cur->is_comment = !strcmp(w, "comment");
			cur->dep = dstack[depth];
			sym = NULL;
			if (!cur->is_comment) {
				if (++depth >= MAX_DEPTH)
					zconf_error("menus nested too deep");
				stack[depth] = cur;
				dstack[depth] = dstack[depth - 1];
				is_if[depth] = 0;
			}
		} else if (!strcmp(w, "endmenu")) {
			if (depth == 0 || is_if[depth])
				zconf_error("unexpected 'endmenu' statement");
			depth--;
			cur = NULL;
			sym = NULL;
		} else if (!strcmp(w, "if")) {
			struct expr *e = parse_or();

			if (++depth >= MAX_DEPTH)
				zconf_error("blocks nested too deep");
			stack[depth] = stack[depth - 1];
			dstack[depth] = expr_and(dstack[depth - 1], e);
			is_if[depth] = 1;
			cur = NULL;
			sym = NULL;
		} else if (!strcmp(w, "endif")) {
			if (depth == 0 || !is_if[depth])
				zconf_error("unexpected 'endif' statement");
			depth--;
			cur = NULL;
			sym = NULL;
		} else if (!strcmp(w, "depends")) {
			char *on = read_word();
			struct expr *e;

			if (!cur || !on || strcmp(on, "on"))
				zconf_error("syntax error: 'depends on' outside an entry");
			e = parse_or();
			cur->dep = expr_and(cur->dep, e);
			if (sym)
				sym->dep = cur->dep;
			else if (!cur->is_comment && depth > 0 && stack[depth] == cur)
				dstack[depth] = expr_and(dstack[depth], e);
		} else if (type_of(w) != T_UNKNOWN) {
			if (!sym)
				zconf_error("syntax error: '%s' outside a config entry", w);
			sym->type = type_of(w);
			if (!strncmp(w, "def_", 4))
				add_default(sym, parse_or());
			else
				read_prompt(sym);
		} else if (!strcmp(w, "prompt")) {
			if (!sym)
				zconf_error("syntax error: 'prompt' outside a config entry");
			read_prompt(sym);
		} else if (!strcmp(w, "default")) {
			if (!sym)
				zconf_error("syntax error: 'default' outside a config entry");
			add_default(sym, parse_or());
		} else if (!strcmp(w, "option")) {
			char *opt = read_word();

			if (!sym || !opt)
				zconf_error("syntax error in 'option'");
			if (!strcmp(opt, "modules"))
				modules_sym = sym;
			/* option env=..., defconfig_list: accepted, not needed here */
		} else if (!strcmp(w, "help")) {
			if (sym)
				sym->has_help = 1;
			in_help = 1;
			help_indent = -1;
		} else if (!strcmp(w, "range")) {
			/* accepted; the sample does not check ranges */
		} else {
			zconf_error("unknown statement \"%s\"", w);
		}
		if (!at_end() && strcmp(w, "range") && strcmp(w, "option"))
			zconf_error("syntax error near \"%s\"", lp);
	}
	if (depth != 0)
		zconf_error("missing 'end%s' at end of file", is_if[depth] ? "if" : "menu");
	fclose(in);
	cur_file = saved_file;
	cur_line = saved_line;
}

/* ---------------------------------------------------------- .config in */

static const char *config_name;	/* the .config being read, for warnings */
static int config_line;

/* "FILE:LINE:warning: WHAT ARG" on stderr; any warning makes .config "changed" */
static void config_warn(const char *what, const char *arg)
{
	fprintf(stderr, "%s:%d:warning: %s%s\n", config_name, config_line, what, arg ? arg : "");
	warnings++;
}

static void bad_value(const char *value, struct symbol *sym)
{
	char text[300];

	snprintf(text, sizeof(text), "symbol value '%s' invalid for ", value);
	config_warn(text, sym->name);
}

static int valid_number(const char *p, int hex)
{
	if (hex && (!strncmp(p, "0x", 2) || !strncmp(p, "0X", 2)))
		p += 2;
	if (!hex && *p == '-')
		p++;
	if (!*p)
		return 0;
	for (; *p; p++)
		if (!(hex ? isxdigit((unsigned char)*p) : isdigit((unsigned char)*p)))
			return 0;
	return 1;
}

static void set_user_value(struct symbol *sym, char *p)
{
	switch (sym->type) {
	case T_TRISTATE:
		if (p[0] == 'm' && p[1] == 0) {
			sym->user_tri = mod;
			sym->has_user = 1;
			return;
		}
		/* fall through */
	case T_BOOL:
		if ((p[0] == 'y' || p[0] == 'n') && p[1] == 0) {
			sym->user_tri = p[0] == 'y' ? yes : no;
			sym->has_user = 1;
			return;
		}
		bad_value(p, sym);
		return;
	case T_STRING: {
		char *o, *s;

		if (*p != '"') {
			bad_value(p, sym);
			return;
		}
		for (o = s = ++p; *s && *s != '"'; s++) {
			if (*s == '\\' && s[1])
				s++;
			*o++ = *s;
		}
		if (*s != '"') {
			config_warn("invalid string found", NULL);
			return;
		}
		*o = 0;
		sym->user_str = xstrdup(p);
		sym->has_user = 1;
		return;
	}
	case T_INT:
	case T_HEX:
		if (!valid_number(p, sym->type == T_HEX)) {
			bad_value(p, sym);
			return;
		}
		sym->user_str = xstrdup(p);
		sym->has_user = 1;
		return;
	default:
		return;
	}
}

/* The option a .config line sets: "CONFIG_X=value" or "# CONFIG_X is not
 * set" (value NULL for "not set"). 0 for blank lines and comments, -1 for
 * anything else. */
static int parse_config_line(char *line, char **name, char **value)
{
	static const char not_set[] = " is not set";
	size_t len = strlen(line), tail = sizeof(not_set) - 1;
	char *eq;

	if (!*line)
		return 0;
	if (*line == '#') {
		if (strncmp(line, "# CONFIG_", 9) || len <= 9 + tail || strcmp(line + len - tail, not_set))
			return 0;
		line[len - tail] = 0;
		*name = line + 9;
		*value = NULL;
		return 1;
	}
	eq = strchr(line, '=');
	if (strncmp(line, "CONFIG_", 7) || !eq)
		return -1;
	*eq = 0;
	*name = line + 7;
	*value = eq + 1;
	return 1;
}

static int conf_read(const char *name)
{
	FILE *in = fopen(name, "r");
	char buf[1024];

	if (!in)
		return 1;
	config_name = name;
	for (config_line = 1; fgets(buf, sizeof(buf), in); config_line++) {
		struct symbol *sym;
		char *option, *value;
		int kind;

		buf[strcspn(buf, "\r\n")] = 0;
		kind = parse_config_line(buf, &option, &value);
		if (kind < 0)
			config_warn("unexpected data", NULL);
		if (kind <= 0)
			continue;
		sym = sym_find(option);
		if (!sym || !sym->menu) {
			changed = 1;	/* an option no Kconfig declares is dropped */
			continue;
		}
		if (sym->has_user)
			config_warn("override: reassigning to symbol ", sym->name);
		if (value) {
			set_user_value(sym, value);
		} else if (sym->type == T_BOOL || sym->type == T_TRISTATE) {
			sym->user_tri = no;
			sym->has_user = 1;
		}
	}
	fclose(in);
	return 0;
}

/* A saved value that kconfig would not keep as it is makes the file "changed". */
static void conf_check_unsaved(void)
{
	struct symbol *s;

	sym_calc_all();
	for (s = symbols; s; s = s->next) {
		if (!s->menu)
			continue;
		if (s->has_user && s->write) {
			if (strcmp(s->cur_str, (s->type == T_BOOL || s->type == T_TRISTATE)
					   ? tri_str(s->user_tri) : s->user_str))
				changed = 1;
		} else if (s->has_user || s->write) {
			changed = 1;
		}
	}
	if (warnings)
		changed = 1;
}

/* ------------------------------------------------------------ asking */

static void need_terminal(void)
{
	if (!have_terminal) {
		printf("aborted!\n\n");
		printf("Console input/output is redirected. ");
		printf("Run 'make oldconfig' to update configuration.\n\n");
		exit(1);
	}
}

static void strip(char *s)
{
	char *p = s;
	size_t l;

	while (isspace((unsigned char)*p))
		p++;
	memmove(s, p, strlen(p) + 1);
	l = strlen(s);
	while (l && isspace((unsigned char)s[l - 1]))
		s[--l] = 0;
}

static int indent = 1;

/* Ask about one symbol; returns after a valid answer (or keeps a set value). */
static void conf_sym(struct symbol *sym)
{
	char line[128];
	enum type type = sym_type(sym);

	for (;;) {
		sym_calc_all();
		printf("%*s%s (%s) ", indent - 1, "", sym->prompt, sym->name);
		if (type == T_BOOL || type == T_TRISTATE) {
			enum tri cur = sym->cur_tri;

			printf("[%c", cur == yes ? 'Y' : cur == mod ? 'M' : 'N');
			if (cur != no)
				printf("/n");
			if (cur != mod && type == T_TRISTATE && sym->visible >= mod)
				printf("/m");
			if (cur != yes && sym->visible == yes)
				printf("/y");
			if (sym->has_help)
				printf("/?");
			printf("] ");
		} else {
			printf("[%s] ", sym->cur_str);
		}
		if (sym->has_user) {
			printf("%s\n", sym->cur_str);
			return;
		}
		printf("(NEW) ");
		need_terminal();
		fflush(stdout);
		line[0] = '\n';
		line[1] = 0;
		if (!fgets(line, sizeof(line), stdin))
			printf("\n");
		else if (!isatty(0))
			printf("%s", line);
		asked = 1;
		changed = 1;
		strip(line);
		if (type == T_BOOL || type == T_TRISTATE) {
			enum tri v;

			if (line[0] == 0)
				v = sym->cur_tri;
			else if (!strcmp(line, "n") || !strcmp(line, "N") || !strcmp(line, "no"))
				v = no;
			else if ((!strcmp(line, "m") || !strcmp(line, "M")) && type == T_TRISTATE &&
				 sym->visible >= mod)
				v = mod;
			else if ((!strcmp(line, "y") || !strcmp(line, "Y") || !strcmp(line, "yes")) &&
				 sym->visible == yes)
				v = yes;
			else if (line[0] == '?') {
				printf("\n(no help in the sample tree)\n\n");
				continue;
			} else
				continue;
			sym->user_tri = v;
			sym->has_user = 1;
			return;
		}
		if (line[0] == 0) {
			sym->user_str = xstrdup(sym->cur_str);
		} else {
			if ((type == T_INT || type == T_HEX) && !valid_number(line, type == T_HEX))
				continue;
			sym->user_str = xstrdup(line);
		}
		sym->has_user = 1;
		return;
	}
}

static void conf_menu(struct menu *menu)
{
	struct menu *child;

	if (menu->sym) {
		sym_calc_all();
		if (menu->sym->visible == no)
			return;
		conf_sym(menu->sym);
	} else if (menu->prompt && menu != &rootmenu) {
		if (expr_calc(menu->dep) == no)
			return;
		printf("%*c\n%*c %s\n%*c\n", indent, '*', indent, '*', menu->prompt, indent, '*');
	}
	if (menu->sym)
		indent += 2;
	for_each_child(child, menu)
		conf_menu(child);
	if (menu->sym)
		indent -= 2;
}

static struct menu *parent_menu(struct menu *menu)
{
	for (menu = menu->parent; menu && menu != &rootmenu; menu = menu->parent)
		if (!menu->sym && !menu->is_comment)
			return menu;
	return &rootmenu;
}

static int restarts;

/* Find visible options without a value and ask about them (menu by menu). */
static void ask_missing(struct menu *menu)
{
	struct menu *child;

	if (menu->sym) {
		sym_calc_all();
		if (menu->sym->visible == no)
			return;
		if (!menu->sym->has_user) {
			if (!restarts++)
				printf("*\n* Restart config...\n*\n");
			conf_menu(parent_menu(menu));
		}
	}
	for_each_child(child, menu)
		ask_missing(child);
}

/* ---------------------------------------------------------- writing */

static void print_value(FILE *out, struct symbol *s)
{
	enum type type = sym_type(s);
	const char *p;

	if (type == T_BOOL || type == T_TRISTATE) {
		if (s->cur_tri == no)
			fprintf(out, "# CONFIG_%s is not set\n", s->name);
		else
			fprintf(out, "CONFIG_%s=%s\n", s->name, s->cur_str);
		return;
	}
	if (type == T_STRING) {
		fprintf(out, "CONFIG_%s=\"", s->name);
		for (p = s->cur_str; *p; p++) {
			if (*p == '"' || *p == '\\')
				fputc('\\', out);
			fputc(*p, out);
		}
		fputs("\"\n", out);
		return;
	}
	fprintf(out, "CONFIG_%s=%s\n", s->name, s->cur_str);
}

static void write_menu(FILE *out, struct menu *menu)
{
	struct menu *child;

	if (menu->sym) {
		if (menu->sym->write)
			print_value(out, menu->sym);
	} else if (menu != &rootmenu && menu->prompt) {
		if (expr_calc(menu->dep) == no)
			return;
		fprintf(out, "\n#\n# %s\n#\n", menu->prompt);
	}
	for_each_child(child, menu)
		write_menu(out, child);
}

static const char *kernelversion(void)
{
	const char *v = getenv("KERNELVERSION");

	return v ? v : "2.6.32";
}

static void header(FILE *out, const char *lead, const char *what, int stamp)
{
	time_t now = time(NULL);

	fprintf(out, "%s\n%s Automatically generated %s: don't edit\n",
		lead[1] ? "/*" : lead, lead, what);
	fprintf(out, "%s Linux kernel version: %s\n", lead, kernelversion());
	if (stamp)
		fprintf(out, "%s %s", lead, ctime(&now));
}

static int conf_write(const char *name)
{
	char tmp[512], old[512];
	const char *env = getenv("KCONFIG_NOTIMESTAMP");
	FILE *out;

	snprintf(tmp, sizeof(tmp), ".tmpconfig.%d", (int)getpid());
	snprintf(old, sizeof(old), "%s.old", name);
	out = fopen(tmp, "w");
	if (!out)
		return 1;
	sym_calc_all();
	header(out, "#", "make config", !(env && *env));
	fprintf(out, "#\n");
	write_menu(out, &rootmenu);
	if (fclose(out))
		return 1;
	rename(name, old);
	if (rename(tmp, name))
		return 1;
	printf("#\n# configuration written to %s\n#\n", name);
	return 0;
}

/* the header of autoconf.h (comment opening, title, version, date, closing) is not compared */
#define AUTOCONF_HEADER_LINES 5

static int replace_if_changed(const char *tmp, const char *name, int skip_lines)
{
	FILE *a = fopen(tmp, "r"), *b = fopen(name, "r");
	char la[1024], lb[1024];
	int same = a && b, n = 0;

	while (same) {
		char *ra = fgets(la, sizeof(la), a), *rb = fgets(lb, sizeof(lb), b);

		if (!ra || !rb) {
			same = !ra && !rb;
			break;
		}
		if (n++ >= skip_lines && strcmp(la, lb))
			same = 0;
	}
	if (a)
		fclose(a);
	if (b)
		fclose(b);
	if (same)
		return remove(tmp);
	return rename(tmp, name);
}

static int conf_write_autoconf(void)
{
	FILE *out, *out_h, *dep;
	struct symbol *s;
	int i;

	sym_calc_all();
	dep = fopen("include/config/auto.conf.cmd", "w");
	if (!dep)
		return 1;
	fprintf(dep, "deps_config := \\\n");
	for (i = n_kconfig_files - 1; i >= 0; i--)
		fprintf(dep, "\t%s%s\n", kconfig_files[i], i ? " \\" : "");
	fprintf(dep, "\ninclude/config/auto.conf: \\\n\t$(deps_config)\n\n");
	fprintf(dep, "ifneq \"$(KERNELVERSION)\" \"%s\"\ninclude/config/auto.conf: FORCE\nendif\n\n",
		kernelversion());
	fprintf(dep, "$(deps_config): ;\n");
	fclose(dep);

	out = fopen(".tmp-auto.conf", "w");
	out_h = fopen(".tmp-autoconf.h", "w");
	if (!out || !out_h)
		return 1;
	header(out, "#", "make config", 1);
	fprintf(out, "#\n");
	header(out_h, " *", "C config", 1);
	fprintf(out_h, " */\n#define AUTOCONF_INCLUDED\n");
	for (s = symbols; s; s = s->next) {
		enum type type = sym_type(s);

		if (!s->menu || !s->write)
			continue;
		if (type == T_BOOL || type == T_TRISTATE) {
			if (s->cur_tri == no)
				continue;
			fprintf(out, "CONFIG_%s=%s\n", s->name, s->cur_str);
			fprintf(out_h, "#define CONFIG_%s%s 1\n", s->name,
				s->cur_tri == mod ? "_MODULE" : "");
		} else if (type == T_STRING) {
			const char *p;

			print_value(out, s);
			fprintf(out_h, "#define CONFIG_%s \"", s->name);
			for (p = s->cur_str; *p; p++) {
				if (*p == '"' || *p == '\\')
					fputc('\\', out_h);
				fputc(*p, out_h);
			}
			fputs("\"\n", out_h);
		} else {
			fprintf(out, "CONFIG_%s=%s\n", s->name, s->cur_str);
			fprintf(out_h, "#define CONFIG_%s %s%s\n", s->name,
				type == T_HEX && strncmp(s->cur_str, "0x", 2) ? "0x" : "",
				s->cur_str);
		}
	}
	if (fclose(out) || fclose(out_h))
		return 1;
	/* autoconf.h keeps its timestamp when its content is unchanged, so that
	 * re-running kconfig does not recompile everything; auto.conf must be
	 * rewritten (make compares its timestamp with .config's). */
	if (replace_if_changed(".tmp-autoconf.h", "include/linux/autoconf.h", AUTOCONF_HEADER_LINES))
		return 1;
	return rename(".tmp-auto.conf", "include/config/auto.conf");
}

/* --------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	const char *name, *kconfig;
	struct symbol *s;
	int opt, mode = 0;

	while ((opt = getopt(argc, argv, "so")) != -1)
		mode = opt;
	if (!mode || optind >= argc) {
		fprintf(stderr, "usage: %s -s|-o Kconfig  (sample tree kconfig: silentoldconfig, oldconfig)\n",
			argv[0]);
		return 1;
	}
	silent_sync = mode == 's';
	kconfig = argv[optind];
	rootmenu.tail = &rootmenu.list;
	read_kconfig(kconfig, &rootmenu, NULL);
	for (s = symbols; s; s = s->next)
		if (!s->menu)
			s->type = T_UNKNOWN;

	name = getenv("KCONFIG_CONFIG");
	if (!name)
		name = ".config";
	if (conf_read(name)) {
		if (silent_sync) {
			printf("***\n*** You have not yet configured your kernel! There is no %s.\n"
			       "*** Write one (e.g. copy a saved configuration there) or run\n"
			       "*** \"make oldconfig\" to answer every question.\n***\n", name);
			return 1;
		}
		changed = 1;
	}
	conf_check_unsaved();
	if (silent_sync)
		have_terminal = isatty(0) && isatty(1) && isatty(2);

	do {
		asked = 0;
		ask_missing(&rootmenu);
	} while (asked);

	/* silentoldconfig writes .config only when something changed; oldconfig
	 * always writes it (and .config.old), as 2.6.32's conf does */
	if ((changed || !silent_sync) && conf_write(name)) {
		fprintf(stderr, "\n*** Error during writing of the kernel configuration.\n\n");
		return 1;
	}
	if (silent_sync && conf_write_autoconf()) {
		fprintf(stderr, "\n*** Error during update of the kernel configuration.\n\n");
		return 1;
	}
	return 0;
}
