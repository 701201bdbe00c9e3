//! The interpreter as admission policies use it: compiled programs, declarations,
//! composited variables, optionals, the authorizer library and the limits.

use serde_json::{json, Value};

use super::*;

const NAMES: &[&str] = &["object", "oldObject", "request", "params"];

fn decls(vars: Option<&[String]>) -> Declarations<'_> {
    Declarations {
        names: NAMES,
        variables: vars,
    }
}

fn run(src: &str, object: &Value) -> Result<Value, String> {
    let p = Program::compile(src, &decls(None))?;
    let null = Value::Null;
    p.evaluate(&Input::new(vec![
        ("object", object),
        ("oldObject", &null),
        ("request", &null),
        ("params", &null),
    ]))
}

#[test]
fn compiling_checks_names_functions_and_syntax() {
    assert!(Program::compile("object.spec.replicas <= 5", &decls(None)).is_ok());
    assert_eq!(
        Program::compile("obj.spec", &decls(None)).unwrap_err(),
        "undeclared reference to 'obj' (in container '')"
    );
    // Macro variables are bound in their body only.
    assert!(Program::compile("object.items.all(i, i > 0)", &decls(None)).is_ok());
    assert!(Program::compile("object.items.all(i, i > 0) && i == 1", &decls(None)).is_err());
    assert!(Program::compile("object.items.map(i, i > 0, i * 2)", &decls(None)).is_ok());
    assert!(Program::compile("object.items.all(i, i > 0, i)", &decls(None)).is_err());
    assert_eq!(
        Program::compile("quantity(object.x) > 1", &decls(None)).unwrap_err(),
        "undeclared reference to 'quantity'"
    );
    assert!(Program::compile("object.x ==", &decls(None))
        .unwrap_err()
        .starts_with("Syntax error"));
    // `variables` only when declared, and only the declared ones.
    let vars = vec!["a".to_string()];
    assert!(Program::compile("variables.a", &decls(Some(&vars))).is_ok());
    assert_eq!(
        Program::compile("variables.b", &decls(Some(&vars))).unwrap_err(),
        "undefined field 'b'"
    );
    assert!(Program::compile("variables.a", &decls(None)).is_err());
    // `optional` is a namespace of three functions.
    assert!(Program::compile("optional.of(1).hasValue()", &decls(None)).is_ok());
    assert!(Program::compile("optional.other(1)", &decls(None)).is_err());
    let p = Program::compile("object.items.all(i, params.max > i)", &decls(None)).unwrap();
    assert!(p.mentions("params") && p.mentions("object") && !p.mentions("request"));
}

#[test]
fn nesting_is_bounded_without_overflowing_the_stack() {
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep).unwrap_err().contains("nests deeper"));
    let long = vec!["1"; 100_000].join(" + ");
    assert!(parse(&long).unwrap_err().contains("nests deeper"));
    let chain = format!("object{}", ".a".repeat(100_000));
    assert!(parse(&chain).unwrap_err().contains("nests deeper"));
    let nots = format!("{}true", "!".repeat(100_000));
    assert!(parse(&nots).unwrap_err().contains("nests deeper"));
    // What people write is well within.
    let fine = vec!["1"; 90].join(" + ");
    assert_eq!(run(&fine, &Value::Null), Ok(json!(90)));
}

#[test]
fn evaluation_is_bounded_by_a_budget() {
    let list = json!((0..1000).collect::<Vec<_>>());
    let obj = json!({"l": list});
    let e = run(
        "object.l.all(a, object.l.all(b, object.l.all(c, a + b + c >= 0)))",
        &obj,
    )
    .unwrap_err();
    assert_eq!(e, "operation cancelled: actual cost limit exceeded");
    assert_eq!(
        run("object.l.all(a, object.l.all(b, a + b >= 0))", &obj),
        Ok(json!(true))
    );
}

#[test]
fn policy_expressions_evaluate() {
    let obj = json!({
        "metadata": {"name": "web-1", "labels": {"app": "web", "env": "prod"}},
        "spec": {"replicas": 3, "containers": [
            {"name": "a", "image": "registry.local/a:1"},
            {"name": "b", "image": "docker.io/b"},
        ]},
    });
    for (src, want) in [
        ("object.spec.replicas <= 5", json!(true)),
        ("object.metadata.name.startsWith('web-')", json!(true)),
        (
            "object.spec.containers.all(c, c.image.startsWith('registry.local/'))",
            json!(false),
        ),
        (
            "object.spec.containers.exists(c, c.image.contains('docker.io'))",
            json!(true),
        ),
        (
            "object.spec.containers.filter(c, c.name != 'a').map(c, c.name)",
            json!(["b"]),
        ),
        (
            "object.spec.containers.map(c, c.name == 'b', c.image)",
            json!(["docker.io/b"]),
        ),
        ("'env' in object.metadata.labels", json!(true)),
        (
            "has(object.spec.replicas) && !has(object.spec.paused)",
            json!(true),
        ),
        ("size(object.spec.containers) == 2", json!(true)),
        (
            "object.metadata.labels.app == 'web' ? 'yes' : 'no'",
            json!("yes"),
        ),
        (
            "object.metadata.name.matches('^[a-z]+-[0-9]$')",
            json!(true),
        ),
        (
            "'replicas ' + string(object.spec.replicas) + ' > ' + string(2.0)",
            json!("replicas 3 > 2"),
        ),
        ("string(1.5) + string(true)", json!("1.5true")),
        (
            "int('7') + int(2.9) == 9 && double('0.5') == 0.5",
            json!(true),
        ),
        ("oldObject == null", json!(true)),
        // Optionals.
        ("object.?spec.?paused.orValue(false)", json!(false)),
        ("object.spec.?replicas.orValue(1)", json!(3)),
        ("object.?status.?phase.hasValue()", json!(false)),
        (
            "object.metadata.labels[?'tier'].orValue('none')",
            json!("none"),
        ),
        ("object.?metadata.labels.app.value()", json!("web")),
        ("oldObject.?spec.orValue('created')", json!("created")),
        ("optional.none().or(optional.of(2)).value()", json!(2)),
        ("optional.ofNonZeroValue('').hasValue()", json!(false)),
        ("object.spec.containers[?5].hasValue()", json!(false)),
    ] {
        assert_eq!(run(src, &obj), Ok(want), "{src}");
    }
    assert_eq!(
        run("object.spec.missing > 1", &obj),
        Err("no such key: missing".into())
    );
    assert_eq!(
        run("optional.none().value()", &obj),
        Err("optional.none() dereference".into())
    );
}

#[test]
fn composited_variables_are_lazy_and_evaluated_once() {
    let names = ["a".to_string(), "b".to_string(), "bad".to_string()];
    let compile = |i: usize, src: &str| Variable {
        name: names[i].clone(),
        program: Program::compile(src, &decls(Some(&names[..i]))),
    };
    let variables = vec![
        compile(0, "object.n * 2"),
        compile(1, "variables.a + 1"),
        compile(2, "object.missing"),
    ];
    // A variable naming a later one does not compile.
    assert!(Program::compile("variables.b", &decls(Some(&names[..1]))).is_err());
    let obj = json!({"n": 20});
    let null = Value::Null;
    let input = Input::new(vec![
        ("object", &obj),
        ("oldObject", &null),
        ("request", &null),
        ("params", &null),
    ])
    .with_variables(&variables);
    let p = |src: &str| Program::compile(src, &decls(Some(&names))).unwrap();
    assert_eq!(p("variables.b == 41").evaluate(&input), Ok(json!(true)));
    // The unused failing variable costs nothing until named.
    assert_eq!(
        p("variables.bad == 1").evaluate(&input),
        Err("composited variable \"bad\" fails to evaluate: no such key: missing".into())
    );
    assert_eq!(
        p("variables.bad == 1 || true").evaluate(&input),
        Ok(json!(true))
    );
    // Evaluated once: the budget spent by the second use is only the reference's.
    let before = input.limits.steps_left();
    p("variables.b").evaluate(&input).unwrap();
    assert!(before - input.limits.steps_left() < 3);
}

#[test]
fn the_authorizer_asks_the_decider() {
    let seen = std::cell::RefCell::new(Vec::new());
    let decide = |a: &Attributes| {
        seen.borrow_mut().push(a.clone());
        if a.verb == "create" && a.resource == "pods" || a.path == "/healthz" {
            Decision::Allow {
                reason: "test allows".into(),
            }
        } else {
            Decision::NoOpinion {
                reason: String::new(),
            }
        }
    };
    let groups = vec!["devs".to_string()];
    let null = Value::Null;
    let names: &[&str] = &["object", "authorizer"];
    let input = Input::new(vec![("object", &null)]).with_authorizer(Authorizer {
        username: "alice",
        groups: &groups,
        request: RequestResource {
            group: "apps",
            resource: "deployments",
            subresource: "",
            namespace: "ns1",
            name: "web",
        },
        decide: &decide,
    });
    let eval = |src: &str| {
        Program::compile(
            src,
            &Declarations {
                names,
                variables: None,
            },
        )
        .unwrap()
        .evaluate(&input)
    };
    assert_eq!(
        eval("authorizer.group('').resource('pods').namespace('ns1').check('create').allowed()"),
        Ok(json!(true))
    );
    assert_eq!(
        eval("authorizer.group('').resource('pods').check('delete').allowed()"),
        Ok(json!(false))
    );
    assert_eq!(
        eval("authorizer.path('/healthz').check('get').reason()"),
        Ok(json!("test allows"))
    );
    assert_eq!(
        eval("authorizer.requestResource.check('update').allowed()"),
        Ok(json!(false))
    );
    assert_eq!(
        eval("authorizer.serviceAccount('kube-system', 'ctl').group('').resource('pods').check('create').errored()"),
        Ok(json!(false))
    );
    let seen = seen.borrow();
    assert_eq!(seen[0].user, "alice");
    assert_eq!(seen[0].groups, groups);
    assert_eq!(seen[0].namespace, "ns1");
    assert_eq!(
        (
            seen[3].api_group.as_str(),
            seen[3].resource.as_str(),
            seen[3].name.as_str()
        ),
        ("apps", "deployments", "web")
    );
    assert_eq!(seen[4].user, "system:serviceaccount:kube-system:ctl");
    assert!(seen[4]
        .groups
        .contains(&"system:serviceaccounts:kube-system".to_string()));
    drop(seen);
    assert!(eval("authorizer.check('get')").is_err());
}
/// The deepest expressions the parser accepts, and long chains of composited
/// variables, parse and evaluate (or fail cleanly) in 1.5 MiB of stack even in debug
/// builds: below the 2 MiB of a tokio worker thread.
#[test]
fn the_deepest_expressions_fit_in_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(1536 << 10)
        .spawn(|| {
            let obj = json!({"l": [1]});
            let deepest = [
                format!("{}1{}", "(".repeat(98), ")".repeat(98)),
                vec!["1"; 99].join(" + "),
                format!("{}true", "!".repeat(98)),
                format!("{}[1]{}", "[".repeat(97), "]".repeat(97)),
                format!("{}true{}", "object.l.all(x, ".repeat(24), ")".repeat(24)),
                format!("{}1{}", "int(".repeat(98), ")".repeat(98)),
            ];
            for src in &deepest {
                let p = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
                let _ = eval(&p, &Env::new(&Vars::new(vec![("object".into(), obj.clone())])));
            }
            // Each variable names the one before, each as deep as allowed.
            let n = 60;
            let names: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
            let variables: Vec<Variable> = (0..n)
                .map(|i| {
                    let prev = if i == 0 { "1".to_string() } else { format!("variables.v{}", i - 1) };
                    let src = format!("{}{prev}{}", "(".repeat(90), " + 1)".repeat(90));
                    Variable {
                        name: names[i].clone(),
                        program: Program::compile(&src, &decls(Some(&names[..i]))),
                    }
                })
                .collect();
            let null = Value::Null;
            let input = Input::new(vec![("object", &null)]).with_variables(&variables);
            let top = Program::compile("variables.v59", &decls(Some(&names))).unwrap();
            assert_eq!(
                top.evaluate(&input),
                Err("composited variable \"v59\" fails to evaluate: composited variable \"v58\" fails to evaluate: expression nests too deeply to evaluate".into())
            );
        })
        .unwrap()
        .join()
        .unwrap();
}
